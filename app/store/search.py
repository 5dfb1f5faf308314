"""Search by words, the same rules for every store.

A query is up to :data:`MAX_TERMS` words (runs of letters, digits and
combining marks, in any script; everything else separates them), case-folded;
a message matches when, for every term, one of its words
starts with it ("depl" finds "deployed"): the stores' full-text indexes do
the finding (SQLite FTS5 prefix queries, PostgreSQL ``to_tsquery('simple',
'term:*')``), with no stemming and no accent folding, so that every store
finds the same messages in any script. Only messages as they stand are
indexed: a deleted message is never found, an edited one by its new text.
Results come newest first, a page at a time; ``next`` is an opaque cursor
for the page after.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from ..chat.errors import ChatError, ErrorCode
from ..chat.models import Message

MAX_TERMS = 8
# what a word is made of, as Unicode categories (SQLite's tokenizer is told the same)
WORD_CATEGORIES = ("L", "N", "M", "Co")
FTS5_TOKENIZER = "unicode61 remove_diacritics 0 categories 'L* N* M* Co'"


def _is_word_char(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "LNM" or category == "Co"


def _words(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each word of ``text``."""
    start = None
    for i, char in enumerate(text):
        if _is_word_char(char):
            if start is None:
                start = i
        elif start is not None:
            yield start, i
            start = None
    if start is not None:
        yield start, len(text)


@dataclass(frozen=True, slots=True)
class SearchPage:
    messages: list[Message]  # newest first
    cursors: list[str]  # cursors[i]: where the results after messages[i] go on
    more: bool  # whether older results exist

    @property
    def next(self) -> str | None:
        """The cursor for the older results, None if there are none."""
        return self.cursors[-1] if self.more and self.cursors else None


def terms(query: str) -> list[str]:
    """The words of ``query`` to look for, case-folded, each once, in order."""
    folded = query.casefold()
    found: list[str] = []
    for start, end in _words(folded):
        if folded[start:end] not in found:
            found.append(folded[start:end])
    return found[:MAX_TERMS]


def matches(text: str, wanted: list[str]) -> bool:
    """Whether every term starts one of ``text``'s words."""
    words = [text[start:end].casefold() for start, end in _words(text)]
    return all(any(w.startswith(t) for w in words) for t in wanted)


def marked(text: str, wanted: list[str]) -> list[list[str | bool]]:
    """``text`` cut into ``[part, matched]`` pieces: the words a term starts are
    matched (to show them marked, as text: no markup to escape)."""
    pieces: list[list[str | bool]] = []
    at = 0
    for start, end in _words(text):
        if any(text[start:end].casefold().startswith(t) for t in wanted):
            if start > at:
                pieces.append([text[at:start], False])
            pieces.append([text[start:end], True])
            at = end
    if at < len(text):
        pieces.append([text[at:], False])
    return pieces


# A cursor into results ordered by (ts, room, seq), newest first; a store
# that orders otherwise has its own (SQLite: the index's doc number).
def encode_cursor(last: Message) -> str:
    """The cursor for the results after ``last``."""
    return f"t{last.ts}.{last.seq}.{last.room}"


def decode_cursor(cursor: str | None) -> tuple[int, str, int]:
    """(ts, room, seq) that results must come before; refuses what we never gave."""
    if cursor is None:
        return (2**62, "", 0)
    ts, _, rest = cursor[1:].partition(".")
    seq, _, room = rest.partition(".")
    if cursor[:1] != "t" or not ts.isdigit() or not seq.isdigit() or not room \
            or len(cursor) > 120:
        raise ChatError(ErrorCode.BAD_REQUEST, "cursor is not one this server gave")
    return (int(ts), room, int(seq))
