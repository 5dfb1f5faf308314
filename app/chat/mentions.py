"""Mentions: who a message's text calls on, by name (``@name``).

Two forms, each naming a person exactly as they connect (a name is matched
after the same NFC normalisation and trimming as a connect's):

* ``@name``: the ``@`` starts the text or follows a character that is not a
  letter, mark, digit or ``_`` (``ann@example.org`` mentions nobody), and the name
  is the letters, marks and digits (of any script), ``_``, ``.`` and ``-`` after it,
  less a trailing ``.`` or ``-`` (``thanks @ana.`` mentions "ana");
* ``@{any name}``: everything between the braces, for names with spaces or
  other signs (``@{Ana María}``, ``@{李 小龍}``).

A message mentions at most :data:`MAX_MENTIONS` people (the first ones in
the text); a sender does not mention themself.

This module is the one the Python client shares with the server (its bot
finds mentions of itself with it): it imports nothing else of Roomcast.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

NAME_MAX = 32  # characters of a display name (the protocol's bound: app.chat.protocol)
MAX_MENTIONS = 20
_BRACED_MAX = NAME_MAX * 4  # characters between braces looked at (a name is NFC-trimmed after)


def _in_name(char: str) -> bool:
    """A letter, mark or digit of any script, or ``_ . -``."""
    return char in "_.-" or unicodedata.category(char)[0] in "LMN"


def _starts_word(char: str) -> bool:
    return char == "_" or unicodedata.category(char)[0] in "LMN"


def _names(text: str) -> Iterator[str]:
    """Each name mentioned, as written (see the module's docstring)."""
    at = text.find("@")
    while at != -1:
        if at == 0 or not _starts_word(text[at - 1]):
            if text.startswith("{", at + 1):
                end = text.find("}", at + 2, at + 3 + _BRACED_MAX)
                braced = text[at + 2:end] if end != -1 else ""
                if braced and "{" not in braced and "\n" not in braced:
                    yield braced
            else:
                end = at + 1
                while end < len(text) and _in_name(text[end]):
                    end += 1
                yield text[at + 1:end].rstrip(".-")
        at = text.find("@", at + 1)


def mentioned(text: str, sender: str = "") -> tuple[str, ...]:
    """The names ``text`` mentions, in the order first mentioned, without ``sender``."""
    names: dict[str, None] = {}
    for written in _names(text):
        name = unicodedata.normalize("NFC", written).strip()
        if name and len(name) <= NAME_MAX and name.isprintable() and name != sender:
            names[name] = None
            if len(names) == MAX_MENTIONS:
                break
    return tuple(names)


def mention_of(name: str) -> str:
    """How to mention ``name`` in a text: ``@name``, or ``@{name}`` where the short
    form would not carry it whole."""
    return f"@{name}" if mentioned(f"@{name}") == (name,) else f"@{{{name}}}"
