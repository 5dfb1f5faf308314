"""One emoji, one reaction: the form in which reactions are compared and kept.

The same emoji reaches us in several spellings: ``❤`` (U+2764 alone),
``❤️`` (with the emoji variation selector U+FE0F) and ``❤︎`` (with the text
selector U+FE0E) are one heart to a person, and a ZWJ sequence such as the
rainbow flag comes with or without the selector inside it. Unicode lists, for
each emoji, its *fully-qualified* spelling (emoji-test.txt); every reaction is
turned into that spelling before it is compared or stored, so all of them
count as one. Anything else is kept as given, in NFC.
"""

from __future__ import annotations

import unicodedata

import emoji as emoji_data

_SELECTORS = str.maketrans("", "", "\ufe0e\ufe0f")

# an emoji without its variation selectors -> its fully-qualified spelling
_FULLY_QUALIFIED = {
    spelling.translate(_SELECTORS): spelling
    for spelling, data in emoji_data.EMOJI_DATA.items()
    if data["status"] == emoji_data.STATUS["fully_qualified"]
}


def canonical(text: str) -> str:
    """``text`` spelled as the fully-qualified emoji it is (``❤`` and ``❤︎``
    are ``❤️``), or in NFC if it is none."""
    text = unicodedata.normalize("NFC", text)
    return _FULLY_QUALIFIED.get(text.translate(_SELECTORS), text)
