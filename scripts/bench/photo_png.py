"""Writes the benchmarks' synthetic 640x480 photo (gradients and an xor texture) as a PNG, with
the standard library alone: scripts/bench-load and scripts/bench-label-cost segment it.

python3 scripts/bench/photo_png.py OUT.png
"""
import struct
import sys
import zlib

w, h = 640, 480
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 255 // w, y * 255 // h, (x ^ y) & 255)) for y in range(h))


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
with open(sys.argv[1], "wb") as f:
    f.write(png)
