"""A second offline domain pair: characters drawn in DejaVu Sans (A) and DejaVu Serif Bold (B).

Both fonts ship with matplotlib (a dependency), so the pair builds with no network. Every
letter, digit, symbol and punctuation mark that both fonts cover is drawn in black on white,
centred; the item is the character, so test pairs share file names (a paired ground truth) and
``data.disjoint=true`` gives training sets that share no character. Built once into the cache
in the CycleGAN layout, like the emoji default.
"""

from __future__ import annotations

import unicodedata
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from translate.emoji import finish_build, is_blank, is_test, start_build
from translate.errors import require

SIZE = 72  # pixels, as the emoji default
FONT_SIZE = 52
FONTS = {"A": "DejaVuSans.ttf", "B": "DejaVuSerif-Bold.ttf"}
NAMES = ("DejaVu Sans", "DejaVu Serif Bold")
BUILD_VERSION = 1  # bump when the rendering below changes, to rebuild caches


def _font_dir() -> Path:
    require(("matplotlib", "fontTools"), "data.source=glyphs (fonts of matplotlib)", "glyphs")
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def shared_characters(paths: list[Path]) -> list[int]:
    """Code points of letters, numbers, symbols and punctuation that every font maps."""
    from fontTools.ttLib import TTFont

    maps = [set(TTFont(str(p)).getBestCmap()) for p in paths]
    common = sorted(set.intersection(*maps))
    return [c for c in common if unicodedata.category(chr(c))[0] in "LNSP"]


def render(font: ImageFont.FreeTypeFont, char: str) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), "white")
    ImageDraw.Draw(image).text((SIZE / 2, SIZE / 2), char, font=font, fill="black", anchor="mm")
    return image


def build_glyph_dataset(cache_dir: Path) -> Path:
    """Build (once) and return ``cache_dir/glyphs-.../`` with trainA, trainB, testA, testB."""
    paths = [_font_dir() / FONTS[d] for d in "AB"]
    root = Path(cache_dir) / f"glyphs-mpl{metadata.version('matplotlib')}-v{BUILD_VERSION}"
    if (root / "manifest.json").is_file():
        return root
    tmp = start_build(root)
    fonts = [ImageFont.truetype(str(p), FONT_SIZE) for p in paths]
    kept, skipped = 0, 0
    for code in tqdm(shared_characters(paths), desc="data: building glyphs", unit="glyph"):
        name = f"{code:04x}"
        images = [render(font, chr(code)) for font in fonts]
        same = np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
        if same or any(is_blank(im, 0.005) for im in images):
            skipped += 1
            continue
        split = "test" if is_test(name) else "train"
        for domain, image in zip("AB", images, strict=True):
            image.save(tmp / f"{split}{domain}" / f"{name}.png")
        kept += 1
    manifest = {"domains": dict(zip("AB", NAMES, strict=True)), "kept": kept, "skipped": skipped}
    return finish_build(tmp, root, manifest)
