"""The VAE codec: pixels <-> normalised latents, all that inference needs of a VAE.

Latents are normalised as ``z = (mean - shift_factor) * scaling_factor`` using the VAE's
own config, so the flow sees roughly unit-variance inputs whatever the VAE.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from translate.errors import TranslateError, first_line
from translate.images import to_pil


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
    def fingerprint(self) -> str:
        """12 hex digits of a SHA-256 over what the latents depend on: the VAE's class, its
        ``shift_factor`` and ``scaling_factor``, and every weight's name, dtype, shape and
        values. Two codecs with equal fingerprints encode alike wherever they were loaded
        from; the same weights loaded in another dtype count as another codec."""
        digest = hashlib.sha256()
        header = [type(self.vae).__name__, self.shift_factor, self.scaling_factor]
        digest.update(json.dumps(header).encode())
        for name, tensor in self.vae.state_dict().items():
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(
                tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
            )
        return digest.hexdigest()[:12]

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
        return self.decode_differentiable(latents)

    def decode_differentiable(self, latents: torch.Tensor) -> torch.Tensor:
        """``decode`` with the graph kept: a loss on the images passes its gradient back to the
        latents through the frozen decoder (its weights take none), for training terms that
        judge decoded images. Pixels the clamp to [-1, 1] cuts pass no gradient."""
        raw = latents.float() / self.scaling_factor + self.shift_factor
        return self.vae.decode(raw.to(self.device, self.dtype)).sample.float().clamp(-1, 1)

    def decode_images(self, latents: torch.Tensor) -> list[Image.Image]:
        """Normalised latents (batch, C, h, w) -> RGB images."""
        return to_pil(self.decode(latents))

    def save_pretrained(self, path: str | Path) -> None:
        """Write the VAE as a diffusers folder (config.json + safetensors)."""
        self.vae.save_pretrained(str(path), safe_serialization=True)


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
