"""Mentions: who a message's text calls on, by name (``@name``).

Two forms, each naming a person exactly as they connect (a name is matched
after the same NFC normalisation and trimming as a connect's):

* ``@name``: the ``@`` starts the text or follows a character that is not a
  letter, digit or ``_`` (``ann@example.org`` mentions nobody), and the name
  is the letters, digits (of any script), ``_``, ``.`` and ``-`` after it,
  less a trailing ``.`` or ``-`` (``thanks @ana.`` mentions "ana");
* ``@{any name}``: everything between the braces, for names with spaces or
  other signs (``@{Ana María}``, ``@{李 小龍}``).

A message mentions at most :data:`MAX_MENTIONS` people (the first ones in
the text); a sender does not mention themself.
"""

from __future__ import annotations

import re
import unicodedata

from .protocol import NAME_MAX

MAX_MENTIONS = 20

_MENTION = re.compile(r"(?<!\w)@(?:\{([^{}\n]{1,%d})\}|([\w.\-]+))" % (NAME_MAX * 4))


def mentioned(text: str, sender: str = "") -> tuple[str, ...]:
    """The names ``text`` mentions, in the order first mentioned, without ``sender``."""
    names: dict[str, None] = {}
    for braced, bare in _MENTION.findall(text):
        name = unicodedata.normalize("NFC", braced or bare.rstrip(".-")).strip()
        if name and len(name) <= NAME_MAX and name.isprintable() and name != sender:
            names[name] = None
            if len(names) == MAX_MENTIONS:
                break
    return tuple(names)


def mention_of(name: str) -> str:
    """How to mention ``name`` in a text: ``@name``, or ``@{name}`` where the short
    form would not carry it whole."""
    return f"@{name}" if mentioned(f"@{name}") == (name,) else f"@{{{name}}}"
