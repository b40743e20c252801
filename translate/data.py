"""Unpaired image sources: two domains, A and B, each with a train and a test split.

Four sources share one result type, ``ImageSource``:
``folders`` (the CycleGAN layout), ``celeba`` (split by one of the 40 attributes),
``emoji`` (the embedded default, built offline by ``translate.emoji``) and ``glyphs`` (a second
offline pair, characters in two fonts, ``translate.glyphs``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from translate.config import DataConfig
from translate.errors import TranslateError
from translate.images import scan_images

SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageSource:
    """The files of both domains and both splits, plus how to crop them."""

    name_a: str
    name_b: str
    files: dict[str, tuple[list[Path], list[Path]]]  # split -> (domain A files, domain B files)
    crop: int | None = None  # center square (px) taken before resizing; None: none
    skipped: tuple[Path, ...] = ()  # links named like images whose target is missing

    def split(self, split: str) -> tuple[list[Path], list[Path]]:
        """(domain A files, domain B files) of ``split`` ("train" or "test")."""
        return self.files[split]


def folder_source(root: Path, name_a: str = "A", name_b: str = "B") -> ImageSource:
    """A CycleGAN-layout folder: ``root/{train,test}{A,B}``, searched recursively."""
    root = Path(root)
    if not root.is_dir():
        raise TranslateError(f"data folder not found: {root}")
    files, skipped = {}, []
    for split in SPLITS:
        pair = []
        for domain in "AB":
            folder = root / f"{split}{domain}"
            if not folder.is_dir():
                raise TranslateError(
                    f"missing folder {folder} (expected trainA, trainB, testA, testB)"
                )
            scan = scan_images(folder)  # links to folders followed
            if not scan.files:
                raise TranslateError(f"no images found in {folder}")
            pair.append(scan.files)
            skipped += scan.broken_links
        files[split] = (pair[0], pair[1])
    return ImageSource(name_a, name_b, files, skipped=tuple(skipped))


def celeba_attributes(root: Path) -> list[str]:
    """The attribute names in ``root/list_attr_celeba.txt``."""
    path = Path(root) / "list_attr_celeba.txt"
    if not path.is_file():
        raise TranslateError(f"CelebA attribute file not found: {path}")
    with path.open() as f:
        f.readline()
        return f.readline().split()


def celeba_source(root: Path, attribute: str, crop: int | None = 140) -> ImageSource:
    """CelebA by ``attribute``: A has it at -1, B at +1; official partitions (0 train, 2 test)."""
    root = Path(root)
    names = celeba_attributes(root)
    if attribute not in names:
        raise TranslateError(
            f"unknown CelebA attribute '{attribute}'; choose from: {', '.join(names)}"
        )
    column = names.index(attribute)
    partition_file = root / "list_eval_partition.txt"
    images = root / "img_align_celeba"
    for needed in (partition_file, images):
        if not needed.exists():
            raise TranslateError(f"CelebA file not found: {needed}")
    partition = dict(
        line.split() for line in partition_file.read_text().splitlines() if line.strip()
    )
    split_of = {"0": "train", "2": "test"}
    files: dict[str, tuple[list[Path], list[Path]]] = {s: ([], []) for s in SPLITS}
    with (root / "list_attr_celeba.txt").open() as f:
        f.readline(), f.readline()
        for line in f:
            fields = line.split()
            if not fields:
                continue
            split = split_of.get(partition.get(fields[0], ""))
            if split is not None:
                files[split][0 if fields[1 + column] == "-1" else 1].append(images / fields[0])
    for split in SPLITS:
        for domain, found in zip("AB", files[split], strict=True):
            if not found:
                raise TranslateError(
                    f"CelebA {split} split has no images in domain {domain} ({attribute})"
                )
    return ImageSource(f"not {attribute}", attribute, files, crop=crop)


def emoji_source(cache_dir: Path) -> ImageSource:
    """The embedded default: OpenMoji (A) and Twemoji (B), rendered into the cache once."""
    from translate.emoji import build_emoji_dataset

    root = build_emoji_dataset(Path(cache_dir))
    return folder_source(root, "OpenMoji", "Twemoji")


def glyph_source(cache_dir: Path) -> ImageSource:
    """A second offline pair: characters in DejaVu Sans (A) and DejaVu Serif Bold (B)."""
    from translate.glyphs import NAMES, build_glyph_dataset

    return folder_source(build_glyph_dataset(Path(cache_dir)), *NAMES)


_SOURCES: dict[str, Callable[[DataConfig], ImageSource]] = {
    "folders": lambda cfg: folder_source(Path(cfg.root or "")),
    "celeba": lambda cfg: celeba_source(Path(cfg.root or ""), cfg.attribute, cfg.celeba_crop),
    "emoji": lambda cfg: emoji_source(Path(cfg.cache_dir)),
    "glyphs": lambda cfg: glyph_source(Path(cfg.cache_dir)),
}


def half_of(name: str) -> int:
    """0 or 1: a fixed half of the item names, by a hash of the file's stem."""
    return int(hashlib.sha1(Path(name).stem.encode()).hexdigest(), 16) % 2


def disjoint_training(files: dict[str, tuple[list[Path], list[Path]]]):
    """The same splits with training items that no domain shares: A keeps the training files
    whose stem falls in half 0, B those in half 1 (``half_of``); the test split is unchanged.

    Raises TranslateError when a domain is left with no training files.
    """
    train_a, train_b = files["train"]
    kept = ([f for f in train_a if half_of(f.name) == 0], [f for f in train_b if half_of(f.name)])
    for domain, found in zip("AB", kept, strict=True):
        if not found:
            raise TranslateError(f"data.disjoint=true leaves domain {domain} no training images")
    return {**files, "train": kept}


def open_source(cfg: DataConfig) -> ImageSource:
    """The image source a data config names, with any display-name overrides applied."""
    source = _SOURCES[cfg.source](cfg)
    files = disjoint_training(source.files) if cfg.disjoint else source.files
    return ImageSource(
        cfg.domain_a or source.name_a,
        cfg.domain_b or source.name_b,
        files,
        source.crop,
        source.skipped,
    )
