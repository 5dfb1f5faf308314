"""``python -m client {tail,send,download,post,bot}``: Roomcast from a shell.

* ``tail --url U --name N --room R``: print the room's recent messages, then
  every new one as it arrives, one line each: ``#SEQ FROM: TEXT`` (with
  ``(re #N)``, ``(edited)``, ``(deleted)`` and ``[EMOJI COUNT]`` where they
  apply), and each change to a message as it comes: ``#SEQ FROM edited #N:
  TEXT``, ``#SEQ FROM deleted #N``, ``#SEQ FROM reacted EMOJI on #N (now C)``.
* ``tail --mentions`` (with or without ``--room``): also follow the messages
  that mention this person, in any room, joined or not, as they come:
  ``@ROOM #SEQ FROM: TEXT``.
* ``send --url U --name N --room R TEXT``: send one message; exit 0 once the
  server has stored it, 1 if it refused, 2 if not stored within ``--timeout``.
  With ``--file PATH`` (repeatable) the files are uploaded (resumably) and
  sent in the message; TEXT may then be left out.
* ``download --url U --name N --room R ID [--out PATH]``: save a file of the
  room (an attachment's id, as ``tail`` shows it) to PATH (default: its name).
* ``post --url U --room R TEXT``: post one message through the HTTP API with
  the key in ``$ROOMCAST_API_KEY`` (or ``--key``), e.g. from a CI job; exit 0
  once stored (retried with the same client id, so at most once), 1 if
  refused, 2 if the server could not be reached within ``--timeout``.
* ``bot --url U --name N --room R [--room R2 ...] [--cursor C]``: run the
  command bot (with ``--cursor``, the server keeps its place: restarted, it
  answers every message it missed, once; it
  also answers where it is mentioned, and in token mode in the direct
  conversations people open with it; a room it is refused is skipped).

Status lines go to stderr; stdout carries only messages.
"""

from __future__ import annotations

import sys

try:  # first: do the installed libraries have the shape the client relies on?
    from client import compat  # noqa: F401
except RuntimeError as exc:  # compat.IncompatibleLibrary: say so, without a traceback
    sys.exit(f"roomcast-client: {exc}")

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Sequence

import aiohttp

from .api import ApiClient, ApiError
from .bot import Bot
from .chat_client import JSON, ChatClient, ChatClientError


_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on escaped: C0 and C1
    controls (ESC, BEL, backspace, CSI U+009B ...), DEL, and the invisible
    format characters that reorder or hide text (bidi overrides and isolates,
    zero-width joiners): a message can then neither move the cursor, erase or
    forge a line, retitle the terminal, nor show text in another order than sent.
    Backslashes are doubled, so what is printed reads back unambiguously."""
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char.isprintable():  # (Unicode's "other" and separators are not: Cc, Cf, Zl...)
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def format_message(message: JSON) -> str:
    """One line per message, whatever the text (or name) holds (see printable)."""
    sender, text = printable(str(message["from"])), printable(str(message["text"]))
    if message.get("deleted"):
        return f"#{message['seq']} {sender}: (deleted)"
    reply = f"(re #{message['reply_to']}) " if message.get("reply_to") else ""
    edited = " (edited)" if message.get("edited") else ""
    reactions = "".join(f" [{printable(str(r['emoji']))} {r['count']}]"
                        for r in message.get("reactions", []))
    files = "".join(f" [file {a['id']}: {printable(str(a['name']))}, {a['size']:,} bytes]"
                    for a in message.get("attachments", []))
    return f"#{message['seq']} {sender}: {reply}{text}{edited}{reactions}{files}"


def format_change(change: JSON) -> str:
    """One line per change to a message (an edit, a delete, a reaction)."""
    who, kind, target = printable(str(change["from"])), change["kind"], change["target"]
    if kind == "edit":
        return f"#{change['seq']} {who} edited #{target}: {printable(str(change['text']))}"
    if kind == "delete":
        return f"#{change['seq']} {who} deleted #{target}"
    emoji = printable(str(change["emoji"]))
    did = "reacted" if kind == "react" else "took back"
    return f"#{change['seq']} {who} {did} {emoji} on #{target} (now {change['count']})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default="http://localhost:8080", help="the Roomcast server")
    common.add_argument("--name", default="", help="display name (open mode)")
    common.add_argument("--token", default=os.environ.get("ROOMCAST_TOKEN"),
                        help="signed token for a server in token mode "
                             "(default: $ROOMCAST_TOKEN)")
    common.add_argument("--serializer", choices=("msgpack", "json"), default="msgpack",
                        help="must match the server's (default msgpack)")
    common.add_argument("--transport", choices=("auto", "websocket", "polling"),
                        default="auto", help="auto: polling, upgraded to WebSocket")
    common.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    tail = commands.add_parser("tail", parents=[common], help="print a room's messages")
    tail.add_argument("--room", help="the room to follow")
    tail.add_argument("--mentions", action="store_true",
                      help="also print every message that mentions you, from any room")
    tail.add_argument("-n", "--lines", type=int, default=10,
                      help="recent messages to print first (default 10)")
    send = commands.add_parser("send", parents=[common], help="send one message")
    send.add_argument("--room", required=True)
    send.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to keep retrying (default 30)")
    send.add_argument("--file", action="append", default=[],
                      help="a file to send with the message (repeat for more)")
    send.add_argument("text", nargs="?", default="")
    download = commands.add_parser("download", parents=[common], help="save a file of a room")
    download.add_argument("--room", required=True)
    download.add_argument("--out", help="where to save it (default: the file's name, here)")
    download.add_argument("id", help="the attachment's id")
    post = commands.add_parser("post", help="post one message through the HTTP API")
    post.add_argument("--url", default="http://localhost:8080", help="the Roomcast server")
    post.add_argument("--key", default=os.environ.get("ROOMCAST_API_KEY"),
                      help="an API key with the publish scope (default: $ROOMCAST_API_KEY)")
    post.add_argument("--room", required=True)
    post.add_argument("--client-id", help="makes the post idempotent across runs "
                                          "(default: one made up for this run)")
    post.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to keep retrying (default 30)")
    post.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    post.add_argument("text")
    bot = commands.add_parser("bot", parents=[common], help="run the command bot")
    bot.add_argument("--room", required=True, action="append", help="repeat for more rooms")
    bot.add_argument("--cursor", help="keep this bot's place on the server under this name: "
                                      "restarted, it answers every message it missed, once")
    return parser


def _client(args: argparse.Namespace) -> ChatClient:
    transports = None if args.transport == "auto" else [args.transport]
    client = ChatClient(args.url, args.name, token=args.token, serializer=args.serializer,
                        transports=transports, cursor=getattr(args, "cursor", None))
    client.on_state = lambda state: _status(
        "connection lost; reconnecting" if state == "disconnected" else "connected")
    return client


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def format_mention(mention: JSON) -> str:
    """One line per message that mentions you: its room, then the message."""
    return f"@{printable(str(mention['room']))} {format_message(mention['message'])}"


async def tail(args: argparse.Namespace) -> int:
    if args.room is None and not args.mentions:
        _status("error: give --room, --mentions or both")
        return 2
    client = _client(args)
    client.on_message = lambda m: print(format_message(m), flush=True)
    client.on_change = lambda c: print(format_change(c), flush=True)
    if args.mentions:
        client.on_mention = lambda m: print(format_mention(m), flush=True)
    await client.connect(retry=True)
    try:
        if args.room is not None:
            ack = await client.join(args.room)
            for message in ack["messages"][-args.lines:] if args.lines > 0 else []:
                print(format_message(message), flush=True)
            members = ", ".join(printable(str(member)) for member in ack["members"])
            _status(f"joined {printable(args.room)} at seq {ack['seq']}; members: {members}")
        if args.mentions:
            _status("following mentions")
        await _until_signal()
    finally:
        await client.close()
    return 0


async def send(args: argparse.Namespace) -> int:
    if not args.text and not args.file:
        _status("error: give the text to send, or --file")
        return 1
    client = _client(args)
    await client.connect()
    try:
        await client.join(args.room)
        files = [await client.upload(args.room, path) for path in args.file]
        message = await asyncio.wait_for(client.send(args.room, args.text, attachments=files),
                                         args.timeout)
    except asyncio.TimeoutError:
        _status(f"not stored within {args.timeout:g} s")
        return 2
    finally:
        await client.close()
    print(format_message(message), flush=True)
    return 0


async def download(args: argparse.Namespace) -> int:
    client = _client(args)
    await client.connect()
    try:
        await client.join(args.room)
        out = args.out
        if out is None:  # the name it was sent with, as a name in this folder only
            found = await client.history(args.room, limit=200)
            names = [a["name"] for m in found["messages"] for a in m.get("attachments", [])
                     if a["id"] == args.id]
            out = os.path.basename(names[0]) if names else args.id
        saved = await client.download(args.room, args.id, out)
    finally:
        await client.close()
    _status(f"saved {saved}")
    return 0


async def post(args: argparse.Namespace) -> int:
    """Post through the HTTP API, retrying what may not have arrived with the
    same client id (stored once however often it is tried)."""
    if not args.key:
        _status("error: give an API key with --key or $ROOMCAST_API_KEY")
        return 1
    client_id = args.client_id or uuid.uuid4().hex
    deadline = asyncio.get_running_loop().time() + args.timeout
    async with ApiClient(args.url, args.key, timeout=min(args.timeout, 10.0)) as api:
        while True:
            try:
                message = await api.post(args.room, args.text, client_id=client_id)
                break
            except ApiError as exc:
                if exc.status not in (429, 503):
                    _status(f"refused: {exc}")
                    return 1
                wait = exc.retry_after or 1.0
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                _status(f"not reached ({exc.__class__.__name__}); trying again")
                wait = 1.0
            if asyncio.get_running_loop().time() + wait > deadline:
                _status(f"not stored within {args.timeout:g} s")
                return 2
            await asyncio.sleep(wait)
    print(format_message(message), flush=True)
    return 0


async def bot(args: argparse.Namespace) -> int:
    client = _client(args)
    chat_bot = Bot(client)
    await client.connect(retry=True)
    try:
        joined = await chat_bot.join_all(args.room)
        _status(f"bot {args.name!r} answering in {', '.join(joined) or 'no room'}"
                + (" and in direct conversations" if args.token else ""))
        await _until_signal()
    finally:
        await client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = {"tail": tail, "send": send, "download": download, "post": post,
               "bot": bot}[args.command]
    try:
        code = asyncio.run(command(args))
    except ChatClientError as exc:
        _status(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        code = 130
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
