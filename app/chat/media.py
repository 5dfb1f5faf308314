"""What an uploaded file is, read from its content, never from what the
client says: its media type (:func:`sniff`), and for an image its size, a
copy without its metadata and a thumbnail (:func:`process_image`).

Only the image types every browser shows are shown inline
(:data:`INLINE`); every other file, HTML and SVG included (they are
``text/plain`` or ``application/octet-stream`` here), is served as a
download (:mod:`app.uploads.routes`). An image is decoded once, whole, with
Pillow, within a bound of pixels counted from its header before any pixel
is decoded (:data:`MAX_PIXELS`): a decompression bomb is refused, not
expanded. Archives are never opened: a zip bomb is only its own bytes.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
MAX_PIXELS = 50_000_000  # an image's width x height (a 50 MP photo; 200 MB decoded as RGBA)
THUMBNAIL = (320, 320)  # the largest a thumbnail may be, keeping the image's shape
SNIFFED = 512  # bytes read from a file's start to tell its type

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (  # (magic, at offset, type)
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"%PDF-", 0, "application/pdf"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"\x1f\x8b", 0, "application/gzip"),
    (b"ftyp", 4, "video/mp4"),
    (b"OggS", 0, "audio/ogg"),
    (b"ID3", 0, "audio/mpeg"),
)


def sniff(head: bytes) -> str:
    """The media type of a file that starts with ``head`` (its first
    :data:`SNIFFED` bytes): a known signature's, else ``text/plain`` for UTF-8
    text without control characters, else ``application/octet-stream``."""
    for magic, at, kind in _SIGNATURES:
        if head[at:at + len(magic)] == magic and (kind != "image/webp" or head[:4] == b"RIFF"):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not a character cut at the end of the head
            return "application/octet-stream"
        text = head[:exc.start].decode("utf-8")
    if any(ch < " " and ch not in "\t\n\r\f" for ch in text):
        return "application/octet-stream"
    return "text/plain"


class NotAnImage(ValueError):
    """The file has an image's signature but does not decode as one, or is too large."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    thumbnail: bytes  # PNG (with transparency) or JPEG


_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


def process_image(path: Path, kind: str, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Check the image at ``path`` (of type ``kind``, one of :data:`INLINE`),
    rewrite it in place without its metadata (EXIF and GPS, comments, XMP;
    turned upright as its EXIF said first), and make its thumbnail. Raises
    :exc:`NotAnImage`. Blocking and CPU-bound: run it in a thread."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=[_FORMATS[kind]]) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise NotAnImage(f"the image is {width}x{height} pixels; at most "
                                     f"{max_pixels:,} pixels are taken")
                frames = getattr(image, "n_frames", 1)
                if width * height * frames > 4 * max_pixels:
                    raise NotAnImage(f"the animation has {frames} frames of {width}x{height}"
                                     " pixels: too many to check")
                image.load()
                if kind == "image/gif" and frames > 1:
                    cleaned = _without_metadata_animated(image)
                    thumb_source = image.copy()
                else:
                    upright = ImageOps.exif_transpose(image)
                    cleaned = _without_metadata(upright, _FORMATS[kind])
                    thumb_source = upright
                    width, height = upright.size
        except NotAnImage:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as exc:
            raise NotAnImage(f"the file is not a readable image ({exc})") from None
    path.write_bytes(cleaned)
    return ImageInfo(width, height, _thumbnail(thumb_source))


def _without_metadata(image: Image.Image, format: str) -> bytes:
    out = io.BytesIO()
    image.info.clear()  # comments, XMP, ICC aside: nothing of it is written
    if format == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=92, exif=b"")
    elif format == "WEBP":
        image.save(out, "WEBP", quality=92, exif=b"", xmp=b"")
    else:
        image.save(out, format)
    return out.getvalue()


def _without_metadata_animated(image: Image.Image) -> bytes:
    out = io.BytesIO()
    duration = image.info.get("duration", 100)
    loop = image.info.get("loop", 0)
    image.info.clear()
    image.save(out, "GIF", save_all=True, duration=duration, loop=loop)
    return out.getvalue()


def _thumbnail(image: Image.Image) -> bytes:
    thumb = image.copy()
    thumb.thumbnail(THUMBNAIL)
    out = io.BytesIO()
    if thumb.mode in ("RGBA", "LA", "P") or "transparency" in thumb.info:
        thumb.info.clear()
        thumb.convert("RGBA").save(out, "PNG")
    else:
        thumb.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()
