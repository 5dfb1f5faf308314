"""File storage: where attachments' bytes are kept, behind one small interface.

``open_files(url)`` picks the implementation by the URL's scheme:

=============  =======================  ========================================
scheme         module                   for
=============  =======================  ========================================
``dir``        :mod:`app.files.local`   one node, or nodes sharing a directory:
                                        ``dir:data/files`` (relative) or
                                        ``dir:/var/lib/roomcast/files``
``s3``         :mod:`app.files.s3`      several nodes: S3-compatible object
                                        storage, ``s3://bucket/prefix?endpoint=
                                        http://minio:9000&region=us-east-1``
=============  =======================  ========================================

Each implementation's module is imported when it is used, so a driver
(aiobotocore for S3) is needed only then.

A file is kept under a key the chat chooses (:mod:`app.chat.attachments`):
an attachment's id and its variant (``<id>``, ``<id>.thumb``). Files are
written once, whole (an upload is assembled elsewhere first, in the node's
spool), read whole or from an offset, and deleted; never changed in place.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

_SCHEMES = {"dir": "app.files.local", "s3": "app.files.s3"}


@dataclass(frozen=True)
class Stored:
    """A kept file: its size, and a local path where it can be sent from (None
    for storage that is not local: read it through ``chunks``)."""

    size: int
    path: Path | None
    chunks: AsyncIterator[bytes]


class FileStorage(Protocol):
    async def put(self, key: str, source: Path) -> None:
        """Keep the file at ``source`` as ``key`` (moved if it can be: the
        caller gives it up), replacing any."""

    async def get(self, key: str) -> Stored | None:
        """The file kept as ``key``, or None."""

    async def delete(self, key: str) -> None:
        """Forget ``key`` (nothing if it is not kept)."""

    def status(self) -> str:
        """For ``/healthz``: "ok", or what is wrong."""

    async def close(self) -> None:
        """Release what the storage holds."""


async def open_files(url: str) -> FileStorage:
    """Open the file storage a URL names, e.g. ``dir:data/files``."""
    scheme = urlsplit(url).scheme
    module_name = _SCHEMES.get(scheme)
    if module_name is None:
        valid = ", ".join(f"{s}:" for s in _SCHEMES)
        raise ValueError(f"unsupported file storage URL {url!r}: the scheme must be one of "
                         f"{valid}")
    module = importlib.import_module(module_name)
    files: FileStorage = await module.open(url)
    return files
