"""A corpus of good, bad and odd input images, generated on the spot."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

GOOD: dict[str, tuple[int, int]] = {}  # relative path -> expected output (width, height)
BAD: list[str] = []  # relative paths that must be reported


def _save(root: Path, rel: str, image: Image.Image, size=None, **kwargs) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    GOOD[rel] = size or image.size


def _bad(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    BAD.append(rel)


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming a huge size (no pixel data needed to trip the check)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def make_corpus(root: Path, seed: int = 0) -> tuple[dict[str, tuple[int, int]], list[str]]:
    GOOD.clear()
    BAD.clear()
    rng = np.random.default_rng(seed)

    def noise(w: int, h: int, channels: int = 3) -> np.ndarray:
        return rng.integers(0, 255, (h, w, channels), dtype=np.uint8)

    _save(root, "square.png", Image.fromarray(noise(32, 32)))
    _save(root, "wide.jpg", Image.fromarray(noise(48, 20)), quality=90)
    _save(root, "tall.png", Image.fromarray(noise(15, 41)))
    _save(root, "tiny.png", Image.fromarray(noise(3, 3)))
    _save(root, "large.png", Image.fromarray(noise(1200, 900)))
    _save(root, "nested/deeper/inner.png", Image.fromarray(noise(20, 20)))
    _save(root, "ñandú con espacios 🙂.png", Image.fromarray(noise(24, 18)))
    _save(root, "photo.webp", Image.fromarray(noise(30, 22)), quality=90)
    _save(root, "bitmap.bmp", Image.fromarray(noise(19, 19)))
    _save(root, "scan.tiff", Image.fromarray(noise(22, 26)))
    _save(root, "grey.jpg", Image.fromarray(noise(20, 20, 1)[..., 0]))
    _save(root, "onebit.png", Image.fromarray(noise(20, 20, 1)[..., 0] > 127))
    _save(root, "cmyk.jpg", Image.fromarray(noise(21, 17)).convert("CMYK"))
    _save(root, "sixteen.png", Image.fromarray(noise(18, 18, 1)[..., 0].astype(np.uint16) * 257))
    _save(root, "rgba.png", Image.fromarray(noise(20, 16, 4)))
    _save(root, "la.png", Image.fromarray(noise(16, 20)).convert("LA"))
    palette = Image.fromarray(noise(20, 20)).convert("P")
    _save(root, "palette-transparent.png", palette, transparency=0)
    animated = [Image.fromarray(noise(20, 14)).convert("P") for _ in range(3)]
    path = root / "animated.gif"
    animated[0].save(path, save_all=True, append_images=animated[1:], duration=50, loop=0)
    GOOD["animated.gif"] = (20, 14)
    rotated = Image.fromarray(noise(40, 16))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    _save(root, "rotated.jpg", rotated, size=(16, 40), exif=exif, quality=95)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _save(root, "with-icc.png", Image.fromarray(noise(20, 20)), icc_profile=icc)

    _bad(root, "empty.png", b"")
    _bad(root, "text-named.jpg", b"this is not an image at all\n" * 10)
    buffer = root / "square.png"
    _bad(root, "truncated.png", buffer.read_bytes()[: len(buffer.read_bytes()) // 2])
    good_jpeg = (root / "wide.jpg").read_bytes()
    _bad(root, "corrupt.jpg", good_jpeg[:200] + bytes(rng.integers(0, 255, 300, dtype=np.uint8)))
    _bad(root, "bomb.png", _bomb_png(30000, 30000))
    (root / "notes.txt").write_text("not an image extension: ignored")
    (root / ".hidden.png").write_bytes(b"hidden files are ignored")
    return dict(GOOD), list(BAD)
