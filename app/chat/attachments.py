"""Attachments: files uploaded to a room, carried by messages, readable only
by the people who may read the room.

The life of a file:

1. **Granted.** A person who may post in a room asks to upload a file
   (``upload``: its room, name and size). The limits are counted here,
   before a byte is stored: the size (``--max-file-bytes``), the person's
   bytes today (``--max-upload-bytes-per-day``, reserved now, counted in
   the store: the same count on every node) and the
   uploads in flight on this node (``--max-uploads-in-flight``). The grant
   is a signed token (:mod:`app.core.signing`) naming the upload's id, room,
   owner, name, size and expiry: the server keeps nothing to check it.
2. **Uploaded**, resumably, over HTTP beside the socket (tus 1.0,
   :mod:`app.uploads.routes`, which calls :meth:`Attachments.create`,
   :meth:`~Attachments.offset`, :meth:`~Attachments.write` and
   :meth:`~Attachments.abandon` with the grant). The bytes go to this node's
   spool (``--upload-spool``), one file per upload; its size is the upload's
   offset, so a cut upload resumes where the disk says it stopped.
3. **Finished** when its last byte arrives: its type is read from its
   content (:mod:`app.chat.media`; what the client said is not used), an
   image is checked, rewritten without its metadata and thumbnailed, and
   the file goes to the file storage (:mod:`app.files`) with its record in
   the store (kind ``file``), waiting to be sent (kind ``file-pending``).
4. **Sent** in a message (``send`` with ``attachments``: its owner's, for
   that room, not in another message): the message carries each file's
   :class:`~app.core.models.Attachment` and the record names the message.
5. **Read** through links (``files``): signed, expiring in
   ``--file-link-ttl``, given only to the room's members.
6. **Removed** with its message's delete; an upload not finished, or
   finished and not sent, within ``--upload-expiry`` is swept away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import ChatError, ErrorCode
from ..core.limits import TokenBucket
from ..core.models import Attachment, Attachments as Carried, Message, RoomName, now_ms
from ..core.policy import check_post
from ..core.signing import BadToken, Expired, matches, sign, signature, verify
from ..files import FileStorage, Stored
from ..settings import Settings
from ..store import MessageStore
from .connections import Connection, Connections
from .media import INLINE, SNIFFED, NotAnImage, process_image, sniff
from .protocol import FilesRequest, UploadRequest

log = logging.getLogger("app.chat")

Ack = dict[str, Any]
T = TypeVar("T")
GRANT, LINK = "upload", "file"  # what a token or a link signature is for
FILE, PENDING = "file", "file-pending"  # the store's record kinds
UPLOADED = "uploaded"  # and, per UTC day (uploaded:YYYY-MM-DD), each person's bytes
DAYS_KEPT = 7  # days back the sweep forgets the counts of (today's and yesterday's stay)
ENDPOINT = "/uploads/"  # where uploads go (app.uploads.routes)
IN_FLIGHT_PER_PERSON = 10  # uploads one person may have under way on a node
UPLOAD_BURST = 8 * 1024 * 1024  # bytes uploads may take at once over their node's rate
VARIANTS = ("original", "thumbnail")


@dataclass(frozen=True)
class Grant:
    """What an upload token says: upload ``id`` of ``size`` bytes, named
    ``name``, by ``owner`` to ``room``, until ``expires`` (s)."""

    id: str
    room: RoomName
    owner: str
    name: str
    size: int
    expires: float


def _day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class Attachments:
    def __init__(self, settings: Settings, store: MessageStore, files: FileStorage,
                 connections: Connections, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.store = store
        self.files = files
        self.connections = connections
        self.clock = clock
        # one for this process when none is configured: grants and links of one node
        self.secret = settings.file_secret.encode() or secrets.token_bytes(32)
        self.spool = Path(settings.upload_spool)
        # this node's uploads not finished -> (whose, when they expire)
        self.in_flight: dict[str, tuple[str, float]] = {}
        self._counting = asyncio.Lock()  # this node's reads and writes of the daily counts
        self.writing: set[str] = set()  # uploads taking a PATCH now (one at a time)
        # every upload's bytes into this node, together: a node taking files as
        # fast as loopback brings them spends its core on them, and the chat waits
        self.bandwidth = TokenBucket(settings.max_upload_rate, UPLOAD_BURST, monotonic)
        self.pause: Callable[[float], Awaitable[None]] = asyncio.sleep  # (tests: a clock's)
        self._sweeper: asyncio.Task[None] | None = None
        self._counts_forgotten = ""  # the UTC day the sweep last forgot past days' counts

    # -- 1. granted -------------------------------------------------------------------

    async def offer(self, conn: Connection, req: UploadRequest) -> Ack:
        """Grant ``conn``'s person an upload to ``req.room`` (counted against the
        limits now); the ack says where to send it and with what token."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "send", "sends and uploads")
        now = self.clock()
        self._forget_expired(now)
        if len(self.in_flight) >= self.settings.max_uploads_in_flight:
            raise ChatError(ErrorCode.RATE_LIMITED, "this server takes no more uploads "
                            "at the moment; try again in a minute", retry_after=60_000)
        if sum(1 for whose, _ in self.in_flight.values() if whose == conn.name) \
                >= IN_FLIGHT_PER_PERSON:  # (nobody holds the node's uploads to themselves)
            raise ChatError(ErrorCode.RATE_LIMITED, f"you have {IN_FLIGHT_PER_PERSON} uploads "
                            "under way; finish or cancel one first")
        settings, standing = await self.store.standing(req.room, conn.name)
        check_post(req.room, settings, standing, conn.identity.power, now_ms(), sending=False)
        await self._count(conn.name, req.size, now)
        upload = secrets.token_urlsafe(16)
        expires = now + self.settings.upload_expiry
        self.in_flight[upload] = (conn.name, expires)
        token = sign(self.secret, GRANT, {"id": upload, "room": req.room, "owner": conn.name,
                                          "name": req.name, "size": req.size,
                                          "exp": int(expires)})
        log.info("upload granted sid=%s name=%r room=%s id=%s size=%d", conn.sid, conn.name,
                 req.room, upload, req.size)
        return {"upload": {"id": upload, "url": ENDPOINT, "token": token,
                           "expires": int(expires * 1000)}}

    async def _count(self, name: str, size: int, now: float) -> None:
        """Count ``size`` bytes against ``name``'s uploads today (UTC), in the
        store, so every node counts the same day; ``rate_limited`` past
        ``--max-upload-bytes-per-day``. (Two nodes granting one person's uploads
        in the same instant may both read the count before either writes it.)"""
        kind = f"{UPLOADED}:{_day(now)}"
        async with self._counting:
            counted = await self.store.record(kind, name)
            used = int(counted["bytes"]) if counted else 0
            if used + size > self.settings.max_upload_bytes_per_day:
                raise ChatError(ErrorCode.RATE_LIMITED, f"you have uploaded {used:,} bytes "
                                f"today; at most {self.settings.max_upload_bytes_per_day:,} "
                                "are taken a day (UTC)")
            await self.store.put_record(kind, name, {"bytes": used + size})

    def grant(self, token: str) -> Grant:
        """The grant ``token`` carries; ``unauthorized`` if it is none of ours,
        ``not_found`` if it expired (the upload is gone)."""
        try:
            g = verify(self.secret, GRANT, token, self.clock())
        except BadToken as exc:
            code = ErrorCode.NOT_FOUND if isinstance(exc, Expired) else ErrorCode.UNAUTHORIZED
            raise ChatError(code, f"upload token: {exc}") from None
        return Grant(g["id"], RoomName(g["room"]), g["owner"], g["name"], g["size"], g["exp"])

    def _forget_expired(self, now: float) -> None:
        for upload in [u for u, (_, expires) in self.in_flight.items() if expires <= now]:
            del self.in_flight[upload]

    # -- 2. uploaded ------------------------------------------------------------------

    def _spooled(self, upload: str) -> Path:
        return self.spool / upload

    async def create(self, grant: Grant, length: int) -> int:
        """Begin the upload ``grant`` allows, of ``length`` bytes (its granted
        size); its offset (a repeated create finds the upload begun)."""
        if length != grant.size:
            raise ChatError(ErrorCode.BAD_REQUEST, f"the upload was granted for {grant.size:,}"
                            f" bytes, not {length:,}")
        if await self._finished(grant) is not None:
            return grant.size
        path = self._spooled(grant.id)
        await asyncio.to_thread(self._touch, path)
        return path.stat().st_size

    @staticmethod
    def _touch(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)

    async def _finished(self, grant: Grant) -> dict[str, Any] | None:
        record = await self.store.record(FILE, grant.id)
        return record if record is not None and record["owner"] == grant.owner else None

    async def offset(self, grant: Grant) -> int:
        """How many bytes of the upload are here (all, once finished);
        ``not_found`` if it was never begun here or was abandoned. An upload
        whose bytes are all here and whose finish failed (the file storage was
        away) is finished now: a client that asks where it stands, finds it
        complete and sends it in a message, must find it finished."""
        path = self._spooled(grant.id)
        try:
            here = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            if await self._finished(grant) is not None:
                return grant.size
            raise ChatError(ErrorCode.NOT_FOUND, "no such upload here (abandoned, expired, "
                            "or begun on another node)") from None
        if here == grant.size and grant.id not in self.writing:
            await self._finish_once(grant)
        return here

    async def write(self, grant: Grant, offset: int, body: AsyncIterator[bytes]) -> int:
        """Append ``body`` to the upload at ``offset`` (where it stands: else
        ``conflict``); the new offset, up to where the body arrived, however it
        ended (a cut connection keeps what came). The last byte finishes it."""
        if grant.id in self.writing:
            raise ChatError(ErrorCode.CONFLICT, "this upload is taking another request now")
        here = await self.offset(grant)
        if offset != here:
            raise ChatError(ErrorCode.CONFLICT, f"the upload is at offset {here:,}, not "
                            f"{offset:,}")
        if here == grant.size:
            return here  # finished already (by offset, if it had to be)
        self.writing.add(grant.id)
        try:
            here = await self._append(grant, here, body)
        finally:
            self.writing.discard(grant.id)
        if here == grant.size:
            await self._finish_once(grant)
        return here

    async def _finish_once(self, grant: Grant) -> None:
        """:meth:`_finish`, by one request at a time (the others see it busy)."""
        self.writing.add(grant.id)
        try:
            await self._finish(grant)
        finally:
            self.writing.discard(grant.id)

    async def _append(self, grant: Grant, here: int, body: AsyncIterator[bytes]) -> int:
        with open(self._spooled(grant.id), "ab") as spooled:
            try:
                async for chunk in body:
                    if here + len(chunk) > grant.size:
                        raise ChatError(ErrorCode.TOO_LARGE, f"the upload is {grant.size:,} "
                                        "bytes; more were sent")
                    spooled.write(chunk)  # (into the page cache: microseconds a chunk)
                    here += len(chunk)
                    self.bandwidth.charge(len(chunk))
                    wait = self.bandwidth.take(0)
                    if wait:  # over the node's upload rate: read no more for now (the
                        # client's TCP window closes, and it waits)
                        await self.pause(wait / 1000)
            except (ConnectionError, asyncio.IncompleteReadError, EOFError):
                log.info("upload id=%s cut at %d of %d bytes", grant.id, here, grant.size)
            except OSError as exc:  # the body's stream failed (aiohttp raises its own)
                log.info("upload id=%s cut at %d of %d bytes (%s)", grant.id, here,
                         grant.size, exc)
        return here

    async def abandon(self, grant: Grant) -> None:
        """Forget an upload not finished (its bytes; its grant no longer counts in
        flight); ``conflict`` if it is finished (delete its message instead)."""
        if await self._finished(grant) is not None:
            raise ChatError(ErrorCode.CONFLICT, "the upload is finished; it goes with its "
                            "message, or by itself if it is never sent")
        self.in_flight.pop(grant.id, None)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._spooled(grant.id).unlink)

    # -- 3. finished ------------------------------------------------------------------

    async def _finish(self, grant: Grant) -> None:
        path = self._spooled(grant.id)
        try:
            attachment, thumbnail = await asyncio.to_thread(self._examine, grant, path)
        except NotAnImage as exc:
            await asyncio.to_thread(path.unlink, True)
            self.in_flight.pop(grant.id, None)
            raise ChatError(ErrorCode.BAD_REQUEST, str(exc)) from None
        if thumbnail is not None:
            thumb = path.with_name(path.name + ".thumb")
            await asyncio.to_thread(thumb.write_bytes, thumbnail)
            await self._storage("put", self.files.put(_key(grant.id, "thumbnail"), thumb))
        await self._storage("put", self.files.put(_key(grant.id, "original"), path))
        record = {"room": grant.room, "owner": grant.owner, "at": now_ms(),
                  "attachment": attachment.stored(), "message": None,
                  "expires": int(grant.expires)}
        await self.store.put_record(FILE, grant.id, record)
        await self.store.put_record(PENDING, grant.id, {"expires": int(grant.expires)})
        self.in_flight.pop(grant.id, None)
        log.info("upload finished id=%s room=%s type=%s size=%d", grant.id, grant.room,
                 attachment.type, attachment.size)

    @staticmethod
    def _examine(grant: Grant, path: Path) -> tuple[Attachment, bytes | None]:
        with open(path, "rb") as f:
            kind = sniff(f.read(SNIFFED))
        if kind not in INLINE:
            return Attachment(grant.id, grant.name, path.stat().st_size, kind), None
        info = process_image(path, kind)
        return Attachment(grant.id, grant.name, path.stat().st_size, kind, info.width,
                          info.height, True), info.thumbnail

    # -- 4. sent ----------------------------------------------------------------------

    async def carried(self, conn: Connection, room: RoomName, ids: tuple[str, ...],
                      client_id: str | None) -> Carried:
        """What the files ``ids`` will be in ``conn``'s message to ``room``: each
        must be its person's, finished, for that room, and in no other message
        (a resend of the message that has them, by its client id, is fine)."""
        records = await asyncio.gather(*(self.store.record(FILE, i) for i in ids))
        carried = []
        for upload, record in zip(ids, records):
            if record is None or record["owner"] != conn.name or record["room"] != room:
                raise ChatError(ErrorCode.NOT_FOUND, f"no finished upload {upload} of yours "
                                f"for {room!r}")
            sent = record["message"]
            if sent is not None and (client_id is None or sent.get("client_id") != client_id):
                raise ChatError(ErrorCode.CONFLICT, f"file {upload} is in message "
                                f"{sent['seq']} already")
            carried.append(Attachment.restored(record["attachment"]))
        return tuple(carried)

    async def sent(self, message: Message) -> None:
        """``message`` was stored with its attachments: each file's record names it."""
        for a in message.attachments:
            record = await self.store.record(FILE, a.id)
            if record is None:
                continue
            record["message"] = {"seq": message.seq, "client_id": message.client_id}
            await self.store.put_record(FILE, a.id, record)
            await self.store.drop_record(PENDING, a.id)

    # -- 5. read ----------------------------------------------------------------------

    async def links(self, conn: Connection, req: FilesRequest) -> Ack:
        """Links to files of a room ``conn`` is in: sent in its messages (or
        ``conn``'s own, not yet sent), valid for ``--file-link-ttl``."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "history", "history requests")
        records = await asyncio.gather(*(self.store.record(FILE, i) for i in req.ids))
        expires = int(self.clock() + self.settings.file_link_ttl)
        found: dict[str, Any] = {}
        for upload, record in zip(req.ids, records):
            if record is None or record["room"] != req.room or (
                    record["message"] is None and record["owner"] != conn.name):
                continue  # (no such file in this room: said as missing)
            attachment = Attachment.restored(record["attachment"])
            found[upload] = {"url": self._link(upload, "original", expires)}
            if attachment.thumbnail:
                found[upload]["thumbnail"] = self._link(upload, "thumbnail", expires)
        return {"files": found, "expires": expires * 1000}

    def _link(self, upload: str, variant: str, expires: int) -> str:
        mac = signature(self.secret, LINK, f"{upload}\n{variant}\n{expires}")
        return f"/files/{upload}/{variant}?exp={expires}&sig={mac}"

    async def open(self, upload: str, variant: str, expires: int, mac: str
                   ) -> tuple[Attachment, Stored]:
        """The file a link names, if the link is ours and has not expired:
        ``forbidden`` otherwise, ``not_found`` if it is gone."""
        if variant not in VARIANTS or not matches(self.secret, LINK,
                                                  f"{upload}\n{variant}\n{expires}", mac):
            raise ChatError(ErrorCode.FORBIDDEN, "not a valid link")
        if expires <= self.clock():
            raise ChatError(ErrorCode.FORBIDDEN, "the link has expired; ask for a new one")
        record = await self.store.record(FILE, upload)
        stored = await self._storage("get", self.files.get(_key(upload, variant))) \
            if record is not None else None
        if record is None or stored is None:
            raise ChatError(ErrorCode.NOT_FOUND, "the file is gone")
        return Attachment.restored(record["attachment"]), stored

    # -- 6. removed -------------------------------------------------------------------

    async def removed(self, attachments: Carried) -> None:
        """The message that carried ``attachments`` was deleted: so are they."""
        for a in attachments:
            await self._remove(a.id)

    async def _remove(self, upload: str) -> None:
        await asyncio.gather(*(self._storage("delete", self.files.delete(_key(upload, v)))
                               for v in VARIANTS))
        await self.store.drop_record(PENDING, upload)
        await self.store.drop_record(FILE, upload)

    async def sweep(self) -> int:
        """Remove uploads past their expiry: unfinished ones in the spool, and
        finished ones never sent. How many went."""
        now = self.clock()
        self._forget_expired(now)
        if self._counts_forgotten != _day(now):  # past days' counts: once a day
            for back in range(2, DAYS_KEPT + 1):
                await self.store.drop_records(f"{UPLOADED}:{_day(now - back * 86400)}")
            self._counts_forgotten = _day(now)
        swept = 0
        for upload, pending in (await self.store.records(PENDING)).items():
            if pending["expires"] <= now:
                await self._remove(upload)
                swept += 1
        swept += await asyncio.to_thread(self._sweep_spool, now - self.settings.upload_expiry)
        return swept

    def _sweep_spool(self, before: float) -> int:
        swept = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.spool.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < before and path.name.split(".")[0] not in \
                            self.writing:
                        path.unlink()
                        swept += 1
        return swept

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_now_and_then(), name="upload-sweeper")

    async def _sweep_now_and_then(self) -> None:
        every = min(60.0, self.settings.upload_expiry / 4)
        while True:
            await asyncio.sleep(every)
            try:
                swept = await self.sweep()
                if swept:
                    log.info("swept %d expired uploads", swept)
            except ChatError as exc:  # the store is away: next time
                log.warning("sweeping uploads failed: %s", exc.message)
            except Exception:
                log.exception("sweeping uploads failed")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    @staticmethod
    async def _storage(what: str, call: Awaitable[T]) -> T:
        """A call of the file storage; its failure (whatever the storage's
        driver raises) is ``unavailable``, logged."""
        try:
            return await call
        except Exception as exc:
            log.warning("file storage %s failed: %s: %s", what, type(exc).__name__, exc)
            raise ChatError(ErrorCode.UNAVAILABLE, "the file storage is unavailable; try "
                            "again later") from None


def _key(upload: str, variant: str) -> str:
    return upload if variant == "original" else f"{upload}.thumb"
