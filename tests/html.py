"""Pages and htmx fragments read as a parsed DOM (lxml.html), selected with CSS (cssselect).

    d = dom(response)                     # a whole page or a fragment
    one(d, "#summary .tile-down .n")      # exactly one element, or the test fails saying so
    [row.get("id") for row in d.cssselect("tr[id^=t-]")]
    text(el)                              # its text, whitespace collapsed, as a reader sees it

A fragment may hold several top-level elements, table rows outside a table included (htmx
out-of-band swaps): they are parsed as they are, under one <fragment> root.
"""

from __future__ import annotations

import re

from lxml import html as lxml_html
from lxml.html import HtmlElement

_DOCTYPE = re.compile(r"\s*<!doctype html", re.IGNORECASE)


def _body(response_or_text) -> str:
    return response_or_text if isinstance(response_or_text, str) else response_or_text.text


def _document(body: str) -> HtmlElement | None:
    return lxml_html.document_fromstring(body) if body.strip() else None


def _html5_doctype(doc: HtmlElement) -> bool:
    # (libxml2 gives a document without one an HTML 4 doctype of its own)
    return (doc.getroottree().docinfo.doctype or "").lower() == "<!doctype html>"


def is_full(response_or_text) -> bool:
    """A whole page: <!doctype html>, then <html> with a <head> holding its <title>."""
    doc = _document(_body(response_or_text))
    return doc is not None and _html5_doctype(doc) and doc.find("head/title") is not None


def is_fragment(response_or_text) -> bool:
    """An htmx fragment: no doctype and no <head>, none of the page around it."""
    doc = _document(_body(response_or_text))
    return doc is None or (not _html5_doctype(doc) and doc.find("head") is None)


def dom(response_or_text) -> HtmlElement:
    """The response's HTML (or a string of it) parsed: the <html> element of a whole page, or
    a <fragment> element holding a fragment's top-level elements."""
    body = _body(response_or_text)
    if _DOCTYPE.match(body):
        return lxml_html.document_fromstring(body)
    return lxml_html.fragment_fromstring(body, create_parent="fragment")


def select(root: HtmlElement, css: str) -> list[HtmlElement]:
    return root.cssselect(css)


def one(root: HtmlElement, css: str) -> HtmlElement:
    found = root.cssselect(css)
    assert len(found) == 1, f"{len(found)} elements match {css!r}, expected one"
    return found[0]


def text(el: HtmlElement | None) -> str:
    """The element's text content with whitespace collapsed ('' for None)."""
    return "" if el is None else " ".join(el.text_content().split())


def texts(root: HtmlElement, css: str) -> list[str]:
    return [text(el) for el in root.cssselect(css)]


def classes(el: HtmlElement) -> set[str]:
    return set((el.get("class") or "").split())
