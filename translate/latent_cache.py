"""The on-disk latent cache: a domain's image files encoded once by a ``LatentCodec``.

Each cache file is keyed by the VAE, the encoding spec and the files (sizes and mtimes), so a
changed VAE, resolution or data set is encoded again; training reads the latents, never pixels.
The images' colour histograms (``translate.colour``; the plan's colour term) are cached the same
way, one row per latent row, keyed by the latent cache's key and the histogram size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from translate.atomic import atomic_file
from translate.codec import LatentCodec
from translate.colour import colour_histograms
from translate.errors import TranslateError, first_line
from translate.images import load_rgb, resize_center_crop, to_tensor

CACHE_FORMAT = 2  # bump when the cache layout or the preprocessing changes (2: ICC -> sRGB)
COLOUR_FORMAT = 1  # bump when translate.colour's histograms change


@dataclass(frozen=True)
class LatentSet:
    """Encoded images of one domain and split."""

    latents: torch.Tensor  # (N, C, h, w) on the CPU: float32, or float16 when memory-mapped
    names: list[str]  # source file of each row, relative to the domain folder's parent
    failures: list[str]  # "path: reason" for each file that could not be read


class _ImageFiles(Dataset):
    """Files -> (index, pixels or None); flipped copies follow the originals when ``flip``."""

    def __init__(self, files: Sequence[Path], resolution: int, crop: int | None, flip: bool):
        self.files, self.resolution, self.crop, self.flip = list(files), resolution, crop, flip

    def __len__(self) -> int:
        return len(self.files) * (2 if self.flip else 1)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        path = self.files[index % len(self.files)]
        try:
            image = resize_center_crop(load_rgb(path), self.resolution, self.crop)
        except Exception as err:  # a corrupt or unreadable file is skipped, not fatal
            return (
                index,
                None,
                f"{path}: {first_line(err)}",
            )
        if index >= len(self.files):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return index, to_tensor([image])[0], ""


def _collate(items):  # keep None entries for unreadable files
    return items


@dataclass(frozen=True)
class EncodeSpec:
    """How images become latents; part of every cache key."""

    resolution: int  # square side in pixels
    crop: int | None = None  # center square (px) taken before resizing
    flip: bool = False  # append horizontally flipped copies
    sample_posterior: bool = False  # a posterior sample instead of the mean


def _file_entries(files: Sequence[Path]) -> list[tuple[str, int, int]]:
    entries = []
    for path in files:
        try:
            st = path.stat()
            entries.append((str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            entries.append((str(path), -1, -1))
    return entries


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cache_key(codec: LatentCodec, files: Sequence[Path], spec: EncodeSpec) -> str:
    """Hash of the VAE identity, the spec and the file list (with sizes and mtimes)."""
    return _hash(
        {
            "format": CACHE_FORMAT,
            "vae": codec.identity(),
            "spec": asdict(spec),
            "files": _file_entries(files),
        }
    )


def encode_files(
    codec: LatentCodec,
    files: Sequence[Path],
    spec: EncodeSpec,
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int = 0,
    desc: str = "encoding",
) -> LatentSet:
    """Encode image files into normalised latents; unreadable files are reported, not fatal."""
    dataset = _ImageFiles(files, spec.resolution, spec.crop, spec.flip)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
    )
    generator = torch.Generator(codec.device).manual_seed(seed)
    chunks, names, failures = [], [], []
    with tqdm(total=len(dataset), desc=desc, unit="img") as bar:
        for batch in loader:
            good = [(i, x) for i, x, _ in batch if x is not None]
            failures += [reason for _, x, reason in batch if x is None]
            if good:
                pixels = torch.stack([x for _, x in good])
                chunks.append(codec.encode(pixels, generator, spec.sample_posterior).cpu())
                names += [_display_name(files[i % len(files)], i >= len(files)) for i, _ in good]
            bar.update(len(batch))
    if not chunks:
        raise TranslateError(f"none of the {len(files)} images could be read ({desc})")
    failures = list(dict.fromkeys(failures))  # a flipped copy repeats its original's failure
    return LatentSet(torch.cat(chunks), names, failures)


def cached_colours(
    cache_dir: str | Path,
    codec: LatentCodec,
    files: Sequence[Path],
    spec: EncodeSpec,
    names: Sequence[str],
    bins: int,
    num_workers: int = 0,
    desc: str = "colours",
) -> torch.Tensor:
    """Colour histograms (len(names), bins**3), float32, of the images behind the latent rows
    ``names`` (``LatentSet.names``) of ``cached_latents(cache_dir, codec, files, spec)``, in that
    order: a flipped copy's row is its flipped image's (``translate.colour.colour_histograms``).

    Memoised under ``cache_dir/colours/<key>.safetensors`` (float16), keyed by that latent
    cache's key, ``bins`` and ``COLOUR_FORMAT``; a cache file that cannot be read or holds
    another number of rows is computed again. Raises TranslateError when a row names no file
    of ``files`` or its file can no longer be read.
    """
    key = {"latents": cache_key(codec, files, spec), "bins": bins, "colours": COLOUR_FORMAT}
    path = Path(cache_dir) / "colours" / f"{_hash(key)}.safetensors"
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                stored = f.get_tensor("histograms")
            if stored.shape == (len(names), bins**3):
                return stored.float()
        except Exception:  # a damaged cache file is only a cache: computed again below
            pass
    dataset = _ImageFiles(files, spec.resolution, spec.crop, spec.flip)
    where = {_display_name(files[i % len(files)], i >= len(files)): i for i in range(len(dataset))}
    unknown = [name for name in names if name not in where]
    if unknown:
        raise TranslateError(f"{desc}: the latent row {unknown[0]} is no file of this data set")
    rows = Subset(dataset, [where[name] for name in names])
    loader = DataLoader(rows, batch_size=64, num_workers=num_workers, collate_fn=_collate)
    chunks = []
    with tqdm(total=len(rows), desc=desc, unit="img") as bar:
        for batch in loader:
            lost = [reason for _, x, reason in batch if x is None]
            if lost:
                raise TranslateError(
                    f"{desc}: {lost[0]}; its latents were cached when it could be read: "
                    "restore the file, or move it out of the data set"
                )
            chunks.append(colour_histograms(torch.stack([x for _, x, _ in batch]), bins))
            bar.update(len(batch))
    stored = (torch.cat(chunks) if chunks else torch.zeros(0, bins**3)).half().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, unique=True) as tmp:
        save_file({"histograms": stored}, str(tmp))
    return stored.float()


def _display_name(path: Path, flipped: bool) -> str:
    name = f"{path.parent.name}/{path.name}"
    return f"{name}#flip" if flipped else name


def cached_latents(
    cache_dir: str | Path,
    codec: LatentCodec,
    files: Sequence[Path],
    spec: EncodeSpec,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "encoding",
    mmap: bool = False,
) -> LatentSet:
    """``encode_files``, memoised on disk under ``cache_dir/latents/<key>.safetensors``.

    The file is written under a temporary name and renamed, so a killed encode never leaves
    a cache file that loads. With ``mmap`` the returned latents are a float16 view of the
    cache file (see ``load_latent_file``).
    """
    path = Path(cache_dir) / "latents" / f"{cache_key(codec, files, spec)}.safetensors"
    if path.is_file():
        return load_latent_file(path, mmap)
    result = encode_files(codec, files, spec, batch_size, num_workers, desc=desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"names": json.dumps(result.names), "failures": json.dumps(result.failures)}
    stored = result.latents.half().contiguous()  # fp16 on disk; a cache hit returns the same values
    with atomic_file(path, unique=True) as tmp:
        save_file({"latents": stored}, str(tmp), metadata=metadata)
    if mmap:
        return load_latent_file(path, mmap)
    return LatentSet(stored.float(), result.names, result.failures)


def load_latent_file(path: Path, mmap: bool = False) -> LatentSet:
    """Read a cache file written by ``cached_latents``.

    By default the latents are read into memory as float32. With ``mmap`` they stay in the
    file: a float16 CPU tensor whose rows are read from disk (or the page cache) when indexed.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        latents = _map_tensor(path, "latents") if mmap else f.get_tensor("latents").float()
    return LatentSet(latents, json.loads(meta["names"]), json.loads(meta["failures"]))


_NUMPY_DTYPES = {"F16": np.float16, "F32": np.float32}


def _map_tensor(path: Path, name: str) -> torch.Tensor:
    """A copy-on-write memory map of one tensor of a safetensors file.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's
    dtype, shape and byte offsets, then the data.
    """
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(header_len))[name]
    dtype = _NUMPY_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise TranslateError(f"{path}: cannot memory-map a {entry['dtype']} tensor")
    begin, _ = entry["data_offsets"]
    offset, shape = 8 + header_len + begin, tuple(entry["shape"])
    array = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape)
    return torch.from_numpy(array)
