"""Files in S3-compatible object storage (``s3://BUCKET[/PREFIX]``): for
several nodes, each serving what any of them stored.

The URL names the bucket and an optional key prefix; its query may give
``endpoint`` (an S3-compatible server's URL, e.g. MinIO's or Ceph's; default
AWS) and ``region``. Credentials come from the environment, as every AWS
client reads them (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, a
profile or an instance role): never from the URL. The bucket must exist.

The driver is aiobotocore (the ``s3`` extra), imported only when this
storage is used. A file is one object, put whole from the spool (a single
PUT takes up to 5 GB, far above ``--max-file-bytes``) and read as a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from . import Stored

CHUNK = 256 * 1024


class S3Files:
    def __init__(self, client: Any, exit_stack: contextlib.AsyncExitStack, bucket: str,
                 prefix: str) -> None:
        self._client = client
        self._stack = exit_stack
        self.bucket = bucket
        self.prefix = prefix
        self._status = "ok"

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def put(self, key: str, source: Path) -> None:
        with source.open("rb") as body:
            await self._call(self._client.put_object(Bucket=self.bucket, Key=self._key(key),
                                                     Body=body))
        await asyncio.to_thread(source.unlink, True)

    async def get(self, key: str) -> Stored | None:
        try:
            found = await self._call(self._client.get_object(Bucket=self.bucket,
                                                             Key=self._key(key)))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise
        return Stored(int(found["ContentLength"]), None, _chunks(found["Body"]))

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    async def _call(self, call: Any) -> Any:
        """A call of the client; its outcome kept for :meth:`status` (a missing
        object is no fault of the storage's)."""
        try:
            result = await call
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("404", "NoSuchKey"):
                self._status = f"S3: {code}"
            raise
        except BotoCoreError as exc:
            self._status = f"S3 unreachable: {exc}"
            raise
        self._status = "ok"
        return result

    def status(self) -> str:
        return self._status

    async def close(self) -> None:
        await self._stack.aclose()


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in body.iter_chunks(CHUNK):
            yield chunk
    finally:
        body.close()


async def open(url: str) -> S3Files:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if not parts.netloc:
        raise ValueError(f"{url!r}: name the bucket, s3://BUCKET[/PREFIX]")
    prefix = parts.path.strip("/")
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(get_session().create_client(
        "s3", endpoint_url=query.get("endpoint"), region_name=query.get("region", "us-east-1"),
        config=Config(retries={"max_attempts": 3, "mode": "standard"},
                      connect_timeout=5, read_timeout=30)))
    files = S3Files(client, stack, parts.netloc, prefix + "/" if prefix else "")
    try:
        await files._call(client.head_bucket(Bucket=parts.netloc))
    except (ClientError, BotoCoreError) as exc:
        await stack.aclose()
        raise ValueError(f"S3 bucket {parts.netloc!r} cannot be used: {exc}") from None
    return files
