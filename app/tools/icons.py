"""Draw the page's app icons (a white speech bubble on the accent blue) as PNG
files, with the standard library only: ``python -m app.tools.icons``.

The PNGs are committed (``app/static/icon-192.png``, ``icon-512.png``); this
is how they were made, to make them again at another size or colour.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

BLUE = (0x25, 0x63, 0xEB)
WHITE = (0xFF, 0xFF, 0xFF)
STATIC = Path(__file__).resolve().parent.parent / "static"


def inside_bubble(x: float, y: float) -> bool:
    """(x, y) in 0..1: a rounded rectangle and its tail, centred (maskable-safe:
    within the middle 80 %)."""
    left, right, top, bottom, radius = 0.22, 0.78, 0.26, 0.64, 0.08
    if left <= x <= right and top <= y <= bottom:
        cx = min(max(x, left + radius), right - radius)
        cy = min(max(y, top + radius), bottom - radius)
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2
    # the tail: a triangle under the bubble's left part
    return bottom <= y <= 0.76 and 0.32 <= x <= 0.32 + (0.76 - y) * 1.2


def png(size: int) -> bytes:
    rows = []
    for j in range(size):
        row = bytearray([0])  # filter: none
        for i in range(size):
            row += bytes(WHITE if inside_bubble((i + .5) / size, (j + .5) / size) else BLUE)
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw)
            + chunk(b"IEND", b""))


def main() -> None:
    for size in (192, 512):
        path = STATIC / f"icon-{size}.png"
        path.write_bytes(png(size))
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
