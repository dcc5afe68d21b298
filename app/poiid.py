"""POIIDs as people paste them: provider consoles print them with Unicode dashes (Adyen uses
U+2011), spreadsheets add spaces. One normal form everywhere they are compared or stored."""

from __future__ import annotations

import unicodedata

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-")


def normalise_poiid(value: str) -> str:
    if value.isascii():  # NFKC and the dashes change nothing in ASCII
        return value.strip()
    return unicodedata.normalize("NFKC", value).translate(_DASHES).strip()
