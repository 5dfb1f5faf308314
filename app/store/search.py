"""Search by words, the same rules for every store.

A query is up to :data:`MAX_TERMS` words (runs of letters, digits and
combining marks, in any script; everything else separates them), each up to
:data:`MAX_TERM_LENGTH` characters, case-folded; a message matches when, for
every term, one of its words starts with it ("depl" finds "deployed"). No
stemming and no accent folding, so that every store finds the same messages
in any script. Only messages as they stand are indexed: a deleted message is
never found, an edited one by its new text. Results come newest first, a
page at a time; ``next`` is an opaque cursor for the page after.

The words are cut here, not by a store's text parser (SQLite's tokenizer,
PostgreSQL's ``to_tsvector``), and indexed as :func:`index_tokens`: each
word behind its room's :func:`room_key`. A prefix query (``"<key>depl"*``
in FTS5, ``'<key>depl':*`` in a ``tsquery``) so goes through the index
entries of the searched room only: a one-letter term costs what the room's
words starting with that letter cost, however large the rest of the store.
(Indexed with the room as a separate token, a prefix term first merged the
postings of every matching word of every room.) A word longer than
MAX_TERM_LENGTH is indexed by its first MAX_TERM_LENGTH characters, which
finds it by any term exactly: a term is no longer than that.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.errors import ChatError, ErrorCode
from ..core.models import Message

MAX_TERMS = 8
MAX_TERM_LENGTH = 64  # characters of a term; words are indexed by this many
_ASCII_WORD = re.compile(r"[a-z0-9]+")  # the words of lower-cased ASCII text
SEARCH_TIMEOUT = 2.0  # seconds a search may take before it is stopped (unless given)


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
    """The words of ``query`` to look for, case-folded, each once, in order
    (:func:`check_terms` says whether a search may look for them)."""
    folded = query.casefold()
    found: list[str] = []
    for start, end in _words(folded):
        if folded[start:end] not in found:
            found.append(folded[start:end])
    return found


def check_terms(wanted: list[str]) -> None:
    """Refuse (``bad_request``) terms no search looks for: none, more than
    MAX_TERMS, or one longer than MAX_TERM_LENGTH."""
    if not wanted:
        raise ChatError(ErrorCode.BAD_REQUEST, "the query has no words to look for")
    if len(wanted) > MAX_TERMS:
        raise ChatError(ErrorCode.BAD_REQUEST,
                        f"the query has {len(wanted)} words; at most {MAX_TERMS}")
    if any(len(t) > MAX_TERM_LENGTH for t in wanted):
        raise ChatError(ErrorCode.BAD_REQUEST,
                        f"a word of the query is at most {MAX_TERM_LENGTH} characters")


def too_slow(what: str, timeout: float) -> ChatError:
    """The answer to a read stopped at its deadline."""
    return ChatError(ErrorCode.UNAVAILABLE, f"the {what} took longer than {timeout:g} s; "
                     "narrow it (more or longer words, one room) or try again later")


@functools.lru_cache(maxsize=4096)
def room_key(room: str) -> str:
    """``room`` as a fixed-length prefix of its index tokens: ASCII letters and
    digits, the same length for every room (so nothing separates it from the
    word). Two rooms that share a key (one pair in a million at 1.5 million
    rooms) only share index entries: stores still select rows by room."""
    return "r" + hashlib.blake2b(room.encode(), digest_size=5).hexdigest()


def index_words(text: str) -> list[str]:
    """Each distinct word of ``text``, case-folded and cut to MAX_TERM_LENGTH.
    (Every message written is indexed on the store's writer: ASCII text, most
    of it, is cut by one regular expression, the same words as _words finds.)"""
    if text.isascii():
        words = _ASCII_WORD.findall(text.lower())
    else:
        words = [text[start:end].casefold() for start, end in _words(text)]
    return list(dict.fromkeys(word[:MAX_TERM_LENGTH] for word in words))


def index_tokens(room: str, text: str) -> list[str]:
    """What a store indexes for a message of ``room``: its :func:`index_words`
    behind the room's key."""
    key = room_key(room)
    return [key + word for word in index_words(text)]


def indexed(room: str, text: str) -> str:
    """:func:`index_tokens` as one string, space-separated: what the stores
    hold (SQLite's ascii tokenizer and PostgreSQL's ``string_to_array``
    split it again)."""
    return " ".join(index_tokens(room, text))


def query_tokens(room: str, wanted: list[str]) -> list[str]:
    """The token prefixes to look for in ``room``'s index entries, one a term."""
    key = room_key(room)
    return [key + t for t in wanted]


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
