"""The VAE codec (pixels <-> normalised latents) and the on-disk latent cache.

Latents are normalised as ``z = (mean - shift_factor) * scaling_factor`` using the VAE's
own config, so the flow sees roughly unit-variance inputs whatever the VAE.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from translate.atomic import atomic_file
from translate.errors import TranslateError, first_line
from translate.images import load_rgb, resize_center_crop, to_pil, to_tensor


@contextlib.contextmanager
def quiet_diffusers():
    """Silence diffusers' warnings (not its errors) inside the block."""
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


VAE_CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}
CACHE_FORMAT = 2  # bump when the cache layout or the preprocessing changes (2: ICC -> sRGB)


class LatentCodec:
    """A diffusers AutoencoderKL or AutoencoderTiny with latent normalisation applied."""

    def __init__(
        self, vae: AutoencoderKL | AutoencoderTiny, source: str, subfolder: str | None = None
    ):
        self.vae = vae.eval().requires_grad_(False)
        self.source = source  # hub id or local folder it was loaded from
        self.subfolder = subfolder
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(vae.config, "shift_factor", 0.0) or 0.0)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        subfolder: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> LatentCodec:
        """Load a VAE by hub id or local folder; the class is read from its ``config.json``.

        ``dtype`` is the dtype the VAE computes in; latents are float32 either way.
        """
        # offline, a hub id can only come from the local hub cache: no retries, a clear cause
        offline = _is_hub_id(name_or_path) and not hub_reachable()
        try:
            config = AutoencoderKL.load_config(
                str(name_or_path), subfolder=subfolder, local_files_only=offline
            )
            class_name = config.get("_class_name", "AutoencoderKL")
            if class_name not in VAE_CLASSES:
                raise TranslateError(
                    f"VAE {name_or_path} is a {class_name}; supported: {', '.join(VAE_CLASSES)}"
                )
            vae = VAE_CLASSES[class_name].from_pretrained(
                str(name_or_path), subfolder=subfolder, torch_dtype=dtype, local_files_only=offline
            )
        except TranslateError:
            raise
        except Exception as err:  # OSError, HTTP errors, bad JSON: all mean "cannot load"
            where = f"{name_or_path}" + (f" (subfolder {subfolder})" if subfolder else "")
            if offline:
                raise TranslateError(
                    f"cannot load VAE {where}: it is not a local folder and the Hugging Face "
                    "Hub cannot be reached (no network?); set vae.pretrained=PATH to a local "
                    "copy, or vae.pretrained=null to train the project's own VAE"
                ) from None
            raise TranslateError(f"cannot load VAE from {where}: {first_line(err)}") from None
        return cls(vae.to(device), str(name_or_path), subfolder)

    def to_dtype(self, dtype: torch.dtype) -> None:
        """Compute encode and decode in ``dtype`` from now on."""
        if dtype != self.dtype:
            # diffusers warns about casting with to() for models with float32-only submodules;
            # AutoencoderKL and AutoencoderTiny have none (the list it prints is empty)
            with quiet_diffusers():
                self.vae.to(dtype=dtype)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each side."""
        if isinstance(self.vae, AutoencoderTiny):
            cfg = self.vae.config
            return cfg.upsampling_scaling_factor ** (len(cfg.decoder_block_out_channels) - 1)
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def identity(self) -> str:
        """A string that changes whenever the weights could have changed (for cache keys)."""
        folder = Path(self.source) / (self.subfolder or "")
        if folder.is_dir():
            stats = sorted(
                (p.name, p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.iterdir()
                if p.is_file()
            )
            return json.dumps({"path": str(folder.resolve()), "files": stats})
        return json.dumps({"hub": self.source, "subfolder": self.subfolder})

    @torch.no_grad()
    def encode(
        self, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
    ) -> torch.Tensor:
        """Pixels (batch, 3, H, W) in [-1, 1] -> normalised latents (batch, C, H/f, W/f)."""
        pixels = pixels.to(self.device, self.dtype)
        if isinstance(self.vae, AutoencoderTiny):
            raw = self.vae.encode(pixels).latents
        else:
            dist = self.vae.encode(pixels).latent_dist
            raw = dist.sample(generator) if sample else dist.mean
        return (raw.float() - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (batch, C, h, w) -> pixels (batch, 3, h*f, w*f) in [-1, 1]."""
        raw = latents.float() / self.scaling_factor + self.shift_factor
        return self.vae.decode(raw.to(self.device, self.dtype)).sample.float().clamp(-1, 1)

    def decode_images(self, latents: torch.Tensor) -> list[Image.Image]:
        """Normalised latents (batch, C, h, w) -> RGB images."""
        return to_pil(self.decode(latents))

    def save_pretrained(self, path: str | Path) -> None:
        """Write the VAE as a diffusers folder (config.json + safetensors)."""
        self.vae.save_pretrained(str(path), safe_serialization=True)


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


def _is_hub_id(name: str | Path) -> bool:
    """Whether ``name`` can only mean a hub repository ("org/name"): no such local path, and
    not written as a path (absolute, ./, ../, ~ or more than one folder)."""
    text = str(name)
    return (
        not Path(text).exists()
        and not Path(text).is_absolute()
        and not text.startswith((".", "~"))
        and text.count("/") <= 1
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``, or huggingface.co) accepts a connection
    within ``timeout`` seconds; False when ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def cache_key(codec: LatentCodec, files: Sequence[Path], spec: EncodeSpec) -> str:
    """Hash of the VAE identity, the spec and the file list (with sizes and mtimes)."""
    entries = []
    for path in files:
        try:
            st = path.stat()
            entries.append((str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            entries.append((str(path), -1, -1))
    payload = {
        "format": CACHE_FORMAT,
        "vae": codec.identity(),
        "spec": asdict(spec),
        "files": entries,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


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
