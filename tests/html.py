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


def is_full(response_or_text) -> bool:
    """A whole page (doctype, <html> with <head> and <body>), not an htmx fragment."""
    body = _body(response_or_text)
    if not _DOCTYPE.match(body):
        return False
    root = lxml_html.document_fromstring(body)
    return root.tag == "html" and root.find("head") is not None and root.find("body") is not None


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
