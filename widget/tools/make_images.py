#!/usr/bin/env python3
"""Draws the widget's logos into widget/images/ (standard library only, deterministic).

A white chat bubble with a green "online" dot on a blue tile, centred on a canvas of each size
Kommo asks for. Run it again only to change the pictures; the PNGs are committed.
"""
import struct
import zlib
from pathlib import Path

SIZES = {  # Kommo's logo files and sizes
    "logo_min.png": (84, 84),
    "logo_small.png": (108, 108),
    "logo_medium.png": (240, 84),
    "logo.png": (130, 100),
    "logo_main.png": (400, 272),
}
BLUE = (36, 99, 235)
WHITE = (255, 255, 255)
GREEN = (46, 204, 91)
SUPERSAMPLE = 4


def rounded_rect(x, y, left, top, right, bottom, radius):
    if not (left <= x <= right and top <= y <= bottom):
        return False
    cx = min(max(x, left + radius), right - radius)
    cy = min(max(y, top + radius), bottom - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def colour_at(x, y, width, height):
    """The colour of point (x, y), or None for transparent."""
    side = min(width, height) * 0.9
    left, top = (width - side) / 2, (height - side) / 2
    u, v = (x - left) / side, (y - top) / side  # 0..1 inside the tile
    if not rounded_rect(u, v, 0, 0, 1, 1, 0.22):
        return None
    dot = (u - 0.72) ** 2 + (v - 0.30) ** 2
    if dot <= 0.13**2:
        return GREEN
    if dot <= 0.17**2:
        return BLUE  # a ring that sets the dot off the bubble
    bubble = rounded_rect(u, v, 0.18, 0.30, 0.74, 0.70, 0.12)
    tail = 0.26 <= u <= 0.42 and 0.66 <= v <= 0.84 and (u - 0.26) <= (0.84 - v) * 0.9
    if bubble or tail:
        return WHITE
    return BLUE


def render(width, height):
    rows = []
    n = SUPERSAMPLE
    for py in range(height):
        row = bytearray([0])  # filter: none
        for px in range(width):
            r = g = b = a = 0
            for sy in range(n):
                for sx in range(n):
                    c = colour_at(px + (sx + 0.5) / n, py + (sy + 0.5) / n, width, height)
                    if c:
                        r, g, b, a = r + c[0], g + c[1], b + c[2], a + 1
            if a:
                row += bytes((r // a, g // a, b // a, round(255 * a / (n * n))))
            else:
                row += bytes(4)
        rows.append(bytes(row))
    return b"".join(rows)


def png(width, height, pixels):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels, 9)) + chunk(b"IEND", b"")


def main():
    out = Path(__file__).resolve().parent.parent / "images"
    out.mkdir(exist_ok=True)
    for name, (width, height) in SIZES.items():
        (out / name).write_bytes(png(width, height, render(width, height)))
        print(f"{name}: {width}x{height}")


if __name__ == "__main__":
    main()
