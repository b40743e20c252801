"""``Translator``: the inference object, loaded from and saved to a checkpoint folder.

A checkpoint folder holds ``translator.json`` (domains, resolution, objective, the resolved
training config), ``unet/`` (EMA weights, safetensors), either ``vae/`` (a saved copy) or a
hub reference to the VAE in ``translator.json``, and optionally ``examples/a2b/*.png`` and
``examples/b2a/*.png`` (held-out source images to try). Nothing is loaded through pickle.

>>> from translate import Translator
>>> tr = Translator.from_pretrained("runs/emoji/checkpoint-final", device="cpu")
>>> out = tr(images, direction="a2b")  # list[PIL.Image], in tr.default_steps("a2b") steps
>>> paths = tr(images, direction="b2a", steps=8, return_trajectory=True)  # Trajectory each
>>> paths[0].times  # [1.0, 0.875, ..., 0.0]: the time of each of its frames
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel
from PIL import Image

from translate.atomic import atomic_dir
from translate.codec import LatentCodec
from translate.config import MAX_GUIDANCE
from translate.errors import TranslateError, first_line
from translate.flow import SourceCondition, time_span
from translate.images import as_srgb, load_rgb, resize_center_crop, to_pil, to_tensor
from translate.model import velocity
from translate.solvers import METHODS, Solution, integrate

FORMAT_VERSION = 1
CONFIG_NAME = "translator.json"
EXAMPLES = "examples"
DIRECTIONS = ("a2b", "b2a")
MAX_ASPECT = 4  # native mode: the long working side is at most this many resolutions
# solver steps of a checkpoint whose training config names none (written before sample.steps
# became the checkpoint's default)
FALLBACK_STEPS = 8
FALLBACK_METHOD = "euler"
GUIDE = "guide"  # the checkpoint's subfolder with the guide UNet of autoguidance
# solver times are float32 sums: a step that starts at progress 0.5 may read 0.49999997, and
# belongs to the unguided part of a path guided until 0.5
TIME_SLACK = 1e-5


@dataclass
class TranslatorInfo:
    """What a checkpoint says about itself (``translator.json``)."""

    domain_a: str
    domain_b: str
    resolution: int  # pixels; images are resized and center-cropped to this square
    objective: str = "ot-cfm"
    sigma: float = 0.0
    step: int = 0  # training steps behind these weights
    source_condition: bool = False  # the UNet also takes the clean source and its direction
    source_noise: float = 0.0  # sigma_s on the source end at inference (translate.flow)
    # autoguidance weight per direction, {"a2b": w, "b2a": w}, of the guide in guide/
    # (Translator.field); 1 or absent: the field alone
    guidance: dict[str, float] = field(default_factory=dict)
    # per direction, the share of its path from the source on which the weight applies
    # (Translator.velocity_field); absent: the whole path
    guidance_until: dict[str, float] = field(default_factory=dict)
    vae: dict[str, Any] = field(
        default_factory=dict
    )  # {"path": "vae"} or {"pretrained", "subfolder"}
    config: dict[str, Any] = field(default_factory=dict)  # the resolved training config
    format_version: int = FORMAT_VERSION

    def problem(self) -> str | None:
        """What is wrong with the stored values, in a few words, or None."""
        for name in ("domain_a", "domain_b"):
            if not isinstance(getattr(self, name), str):
                return f'"{name}" must be a string'
        for name in ("resolution", "step", "format_version"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return f'"{name}" must be a non-negative integer, got {value!r}'
        if self.resolution == 0:
            return '"resolution" must be positive'
        if not isinstance(self.source_condition, bool):
            return '"source_condition" must be true or false'
        noise = self.source_noise
        if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise < 1e9:
            return f'"source_noise" must be a non-negative number, got {noise!r}'
        weights = self.guidance
        if not isinstance(weights, dict) or not set(weights) <= set(DIRECTIONS):
            return f'"guidance" must map a2b and b2a to weights, got {weights!r}'
        for weight in weights.values():
            if not _is_weight(weight):
                return f'"guidance" weights must be in [0, {MAX_GUIDANCE:g}], got {weight!r}'
        spans = self.guidance_until
        if not isinstance(spans, dict) or not set(spans) <= set(DIRECTIONS):
            return f'"guidance_until" must map a2b and b2a to shares, got {spans!r}'
        for until in spans.values():
            number = isinstance(until, (int, float)) and not isinstance(until, bool)
            if not (number and 0 < until <= 1):
                return f'"guidance_until" shares must be in (0, 1], got {until!r}'
        vae = self.vae
        if not isinstance(vae, dict) or not isinstance(vae.get("path", vae.get("pretrained")), str):
            return f'"vae" must name a "path" or a "pretrained" VAE, got {vae!r}'
        if not isinstance(self.config, dict):
            return '"config" must be a mapping'
        return None


VAE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_vae_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on a GPU that supports it, float32 otherwise (docs/PERFORMANCE.md)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if dtype not in VAE_DTYPES:
        raise TranslateError(f"vae_dtype must be auto or one of {', '.join(VAE_DTYPES)}: {dtype}")
    return VAE_DTYPES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) -> cuda when available, else cpu."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    # "cpu:0" (as accelerate reports under torchrun) computes differently from "cpu"
    return torch.device("cpu") if device.type == "cpu" else device


@dataclass(frozen=True)
class TranslationOptions:
    """How to translate: validated once, the same rules for the Translator, the converter,
    the app and evaluation. Raises ValueError (one line, naming the valid values)."""

    direction: str = "a2b"  # a2b: t 0 -> strength; b2a: t 1 -> 1 - strength
    # solver steps (dopri5: trajectory frames only); None: the checkpoint's own
    # (``Translator.default_steps``)
    steps: int | None = None
    # translate.solvers.METHODS; None: the checkpoint's own (``Translator.default_method``)
    method: str | None = None
    strength: float = 1.0  # in (0, 1]: the share of the path travelled
    seed: int = 0  # the source noise of a source-noised model (other models ignore it)
    # autoguidance weight (Translator.field); None: the checkpoint's own for the direction
    # (``Translator.default_guidance``)
    guidance: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"direction must be one of {', '.join(DIRECTIONS)}; got {self.direction!r}"
            )
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.steps is not None and not _whole(self.steps, 1, math.inf):
            raise ValueError(f"steps must be a positive integer; got {self.steps!r}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1]; got {self.strength!r}")
        if not _whole(self.seed, 0, 2**63):
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        if self.guidance is not None and not _is_weight(self.guidance):
            raise ValueError(f"guidance must be in [0, {MAX_GUIDANCE:g}]; got {self.guidance!r}")


def _architecture(unet: UNet2DModel) -> dict:
    """A UNet's configuration without diffusers' own bookkeeping (keys starting with _), its
    tuples as lists (a UNet read from disk has lists where a built one may have tuples)."""
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in unet.config.items()
        if not k.startswith("_")
    }


def span_text(until: float) -> str:
    """How a report or model card says a guided share of the path: "" for the whole path."""
    return f" on the first {until:.0%} of the path" if until < 1 else ""


def _no_guide(weight: float) -> str:
    return (
        f"guidance {weight:g} needs a guide, and this checkpoint has none (only a run with a "
        "guidance weight other than 1 keeps one): use guidance 1"
    )


def _is_weight(value: Any) -> bool:
    """An autoguidance weight: a number (not a bool) in [0, MAX_GUIDANCE]; NaN is not."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and 0 <= value <= MAX_GUIDANCE


def _whole(value: Any, low: float, high: float) -> bool:
    """Whether ``value`` is a whole number in [low, high): an int, or a float such as 3.0 (a
    web page's number field); False for anything else, NaN and infinity included."""
    try:
        return int(value) == value and low <= value < high
    except (TypeError, ValueError, OverflowError):
        return False


@dataclass(frozen=True, eq=False)
class Trajectory(Sequence):
    """One image's frames along the path, with the time of each: a sequence of its frames."""

    frames: list[Image.Image]  # steps + 1 frames (2 for dopri5 without a grid), source first
    times: list[float]  # the t of each frame (translate.flow: 0 = domain A, 1 = domain B)

    def __getitem__(self, index):
        return self.frames[index]

    def __len__(self) -> int:
        return len(self.frames)


def finite_outputs(translate: Callable[[list], list], images: list) -> list:
    """``translate(images)``, with the reason (a str) in place of each output that is not finite.

    ``translate`` maps a list of inputs to a list of outputs and raises
    ``NonFiniteOutputError`` when any output holds NaN or infinity; such a batch is retried
    image by image, so that one bad image fails alone.
    """
    try:
        return translate(images)
    except NonFiniteOutputError as err:
        if len(images) == 1:
            return [str(err)]
        return [out for image in images for out in finite_outputs(translate, [image])]


class NonFiniteOutputError(ValueError):
    """A translation whose latents hold NaN or infinity (it would decode to a flat image)."""


class Translator:
    """Translates images A -> B and B -> A by integrating one learned velocity field."""

    def __init__(
        self,
        unet: UNet2DModel,
        codec: LatentCodec,
        info: TranslatorInfo,
        device: str | torch.device | None = "auto",
        examples: dict[str, list[Image.Image]] | None = None,
        guide: UNet2DModel | None = None,
    ) -> None:
        """``guide``: the weaker field of autoguidance (see ``field``); ``info.guidance``
        holds its weight per direction (1, the field alone, where absent)."""
        self.device = resolve_device(device)
        self.unet = unet.eval().requires_grad_(False).to(self.device)
        self.guide = None if guide is None else guide.eval().requires_grad_(False).to(self.device)
        self.info = info
        if guide is None and self.guided:
            raise TranslateError(f"guidance {info.guidance} needs a guide UNet; none was given")
        if guide is not None and _architecture(guide) != _architecture(unet):
            raise TranslateError("the guide UNet is not of the field's architecture")
        self.codec = codec
        self.codec.vae.to(self.device)  # in its own dtype; latents and the UNet stay float32
        # direction -> held-out source images to try, e.g. {"a2b": [...], "b2a": [...]}
        self.examples = examples or {}

    @property
    def domains(self) -> tuple[str, str]:
        return self.info.domain_a, self.info.domain_b

    @property
    def resolution(self) -> int:
        return self.info.resolution

    def _sample_setting(self, key: str) -> Any:
        """The training config's ``sample.<key>``, unchecked; None where the config has none."""
        sample = self.info.config.get("sample")
        return sample.get(key) if isinstance(sample, dict) else None

    def default_steps(self, direction: str) -> int:
        """Solver steps ``direction`` ("a2b" or "b2a") uses when a call names none: the
        training config's ``sample.<direction>_steps``, else its ``sample.steps`` (the step
        counts its sample grids were drawn with: the default recipe's 4 A -> B, the number of
        Euler steps its adversarial term and reflow round train for, and 8 B -> A), or
        ``FALLBACK_STEPS`` for a checkpoint whose config has neither.

        Raises ValueError for another direction."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        for key in (f"{direction}_steps", "steps"):
            steps = self._sample_setting(key)
            if not isinstance(steps, bool) and _whole(steps, 1, math.inf):
                return int(steps)
        return FALLBACK_STEPS

    @property
    def default_method(self) -> str:
        """Solver used when a call names none: the training config's ``sample.method``, the
        solver its sample grids were drawn with (``default_steps`` are its steps; dopri5's are
        trajectory frames), or ``FALLBACK_METHOD`` for a checkpoint whose config has none."""
        method = self._sample_setting("method")
        return method if isinstance(method, str) and method in METHODS else FALLBACK_METHOD

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device | None = "auto",
        vae_dtype: str | torch.dtype = "auto",
    ) -> Translator:
        """Load a checkpoint folder written by ``save_pretrained`` (or by training).

        ``vae_dtype``: "auto" (bfloat16 on a GPU that has it, else float32), "float32",
        "bfloat16" or "float16".
        """
        path = Path(path)
        if not path.exists():
            raise TranslateError(f"checkpoint not found: {path}")
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise TranslateError(f"not a translate checkpoint (no {CONFIG_NAME}): {path}")
        try:
            raw = json.loads(config_file.read_text())
            info = TranslatorInfo(**raw)
        except (json.JSONDecodeError, TypeError) as err:
            raise TranslateError(f"unreadable {config_file}: {err}") from None
        problem = info.problem()
        if problem:
            raise TranslateError(f"damaged {config_file}: {problem}")
        if info.format_version > FORMAT_VERSION:
            raise TranslateError(
                f"checkpoint {path} has format {info.format_version}; this version reads up to "
                f"{FORMAT_VERSION}: upgrade translate"
            )
        try:
            unet = UNet2DModel.from_pretrained(str(path / "unet"))
        except Exception as err:
            raise TranslateError(
                f"cannot load the UNet from {path / 'unet'}: {first_line(err)}"
            ) from None
        guide = None
        if any(weight != 1 for weight in info.guidance.values()):
            try:
                guide = UNet2DModel.from_pretrained(str(path / GUIDE / "unet"))
            except Exception as err:
                raise TranslateError(
                    f"damaged checkpoint {path}: its guidance {info.guidance} needs the guide "
                    f"UNet in {path / GUIDE / 'unet'}: {first_line(err)}"
                ) from None
            if _architecture(guide) != _architecture(unet):
                raise TranslateError(
                    f"damaged checkpoint {path}: its guide UNet is not of its UNet's architecture"
                )
        dtype = resolve_vae_dtype(vae_dtype, resolve_device(device))
        if "path" in info.vae:
            codec = LatentCodec.from_pretrained(path / info.vae["path"], dtype=dtype)
        else:
            codec = LatentCodec.from_pretrained(
                info.vae.get("pretrained", ""), info.vae.get("subfolder"), dtype=dtype
            )
        expected = codec.latent_channels * (2 if info.source_condition else 1)
        if unet.config.in_channels != expected:
            raise TranslateError(
                f"incompatible checkpoint {path}: UNet expects {unet.config.in_channels} input "
                f"channels, the VAE and {CONFIG_NAME} give {expected}"
            )
        return cls(unet, codec, info, device, _load_examples(path / EXAMPLES), guide)

    def save_pretrained(self, path: str | Path) -> None:
        """Write a checkpoint folder atomically (a temporary folder, then a rename)."""
        with atomic_dir(Path(path), unique=True) as tmp:
            self._write(tmp)

    def _write(self, tmp: Path) -> None:
        """The checkpoint's files, into the (temporary) folder ``tmp``."""
        self.unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
        if self.guide is not None:
            self.guide.save_pretrained(str(tmp / GUIDE / "unet"), safe_serialization=True)
        info = TranslatorInfo(**asdict(self.info))
        if Path(self.codec.source, self.codec.subfolder or "").is_dir():
            self.codec.save_pretrained(tmp / "vae")
            info.vae = {"path": "vae"}
        else:
            info.vae = {"pretrained": self.codec.source, "subfolder": self.codec.subfolder}
        meta = asdict(info)
        for key in ("guidance", "guidance_until"):  # readable by earlier versions when unused
            if not meta[key]:
                del meta[key]
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        for direction, images in self.examples.items():
            (tmp / EXAMPLES / direction).mkdir(parents=True)
            for i, image in enumerate(images):
                image.save(tmp / EXAMPLES / direction / f"{i:02d}.png")

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: VAE downsampling x UNet downsampling."""
        levels = len(self.unet.config.block_out_channels)
        return self.codec.downsample_factor * 2 ** (levels - 1)

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) at which an image is translated in ``size="native"`` mode.

        The short side is scaled to the model resolution, the aspect ratio kept (up to
        ``MAX_ASPECT``), and each side rounded to a multiple of ``size_multiple``.
        """
        scale = self.resolution / min(width, height)
        limit = self.resolution * MAX_ASPECT
        m = self.size_multiple
        w, h = min(width * scale, limit), min(height * scale, limit)
        return max(m, round(w / m) * m), max(m, round(h / m) * m)

    def prepare(self, image: Image.Image, size: str = "model") -> Image.Image:
        """An RGB image resized for the model: ``model`` square crop, or ``native`` shape."""
        if size == "model":
            return resize_center_crop(image, self.resolution)
        if size == "native":
            return image.resize(self.working_size(*image.size), Image.Resampling.BICUBIC)
        raise ValueError(f"size must be 'model' or 'native', got '{size}'")

    def preprocess(self, images: Sequence[Image.Image | str | Path]) -> torch.Tensor:
        """Images or paths -> pixels (batch, 3, R, R) in [-1, 1] at the model resolution."""
        return to_tensor([self.prepare(_load(im)) for im in images])

    def check_guidance(self, guidance: float | None) -> None:
        """TranslateError (one line) when the weight ``guidance`` (None: the checkpoint's own)
        needs a guide that this checkpoint does not have."""
        if guidance is not None and guidance != 1 and self.guide is None:
            raise TranslateError(_no_guide(guidance))

    def default_guidance(self, direction: str) -> float:
        """The autoguidance weight of ``direction`` when a call names none: the checkpoint's
        own (its training ``guidance.a2b`` / ``guidance.b2a``), 1 (the field alone) where it
        has none."""
        return float(self.info.guidance.get(direction, 1.0))

    def guidance_until(self, direction: str) -> float:
        """The share of ``direction``'s path, from its source, on which its autoguidance
        weight applies (the checkpoint's ``guidance.<direction>_until``; 1: the whole path)."""
        return float(self.info.guidance_until.get(direction, 1.0))

    def _guided_span(self, direction: str, guidance: float | None) -> tuple[float, float]:
        """(weight, share): the weight a call with ``guidance`` uses (None: the checkpoint's)
        and the share of the path it applies to, 1 when the weight is 1 (nothing to switch)."""
        weight = self.default_guidance(direction) if guidance is None else guidance
        return weight, 1.0 if weight == 1 else self.guidance_until(direction)

    @property
    def guided(self) -> bool:
        """Whether a call without ``guidance`` uses the guide in some direction."""
        return any(self.default_guidance(d) != 1 for d in DIRECTIONS)

    def field(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        condition: SourceCondition | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """The velocity (batch, C, h, w) at latents x (batch, C, h, w) and times t in [0, 1].

        With a weight w = ``guidance`` other than 1 it is the autoguided
        v_guide + w * (v - v_guide) (Karras et al., NeurIPS 2024, Eq. 1, on velocities): two
        UNet calls; with 1 the learned v(x, t) alone. A source-conditioned model needs the
        ``condition`` of its rows (``velocity_field`` binds it). Raises ValueError for w != 1
        without a guide.
        """
        weight = float(guidance)
        v = velocity(self.unet, x, t, condition)
        if weight == 1:
            return v
        if self.guide is None:
            raise ValueError(_no_guide(weight))
        return torch.lerp(velocity(self.guide, x, t, condition), v, weight)

    def velocity_field(self, sources: torch.Tensor, direction: str, guidance: float | None = None):
        """v(x, t) for translations of ``sources`` (batch, C, h, w) in ``direction``: ``field``
        with the sources' condition (a source-conditioned model) and the autoguidance weight
        bound (``guidance``; None: ``default_guidance(direction)``).

        The weight applies where the translation's progress s (t for A -> B, 1 - t for B -> A:
        0 at the source) is below ``guidance_until(direction)``; the field alone beyond it
        (guidance on a limited interval, after Kynkaanniemi et al., NeurIPS 2024). It is decided
        at each evaluation, a solver's intermediate stages included: with 4 Euler steps and a
        share of 0.5 the first two steps are guided; an RK4 step that ends at the boundary
        evaluates its last stage unguided.
        """
        condition = None
        if self.info.source_condition:
            condition = SourceCondition.of(sources, direction == "b2a")
        weight, until = self._guided_span(direction, guidance)
        if until >= 1:
            return lambda x, t: self.field(x, t, condition, weight)

        def partly_guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            progress = t if direction == "a2b" else 1 - t
            inside = progress < until - TIME_SLACK
            if bool(inside.all()):
                return self.field(x, t, condition, weight)
            alone = self.field(x, t, condition)
            if not bool(inside.any()):
                return alone
            rows = inside.expand(len(x)).view(-1, *([1] * (x.dim() - 1)))
            return torch.where(rows, self.field(x, t, condition, weight), alone)

        return partly_guided

    def start(
        self, sources: torch.Tensor, seed: int = 0, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The state the solver starts from: sources + sigma_s * noise (the sources themselves
        for a model without source noise). ``noise`` (like ``sources``) defaults to one draw
        of shape (C, h, w) from ``seed``, the same for every row, so that an image's
        translation does not depend on the batch it is in."""
        sigma = self.info.source_noise
        if sigma == 0:
            return sources
        if noise is None:
            draw = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(sources.shape[1:], generator=draw).expand_as(sources)
        return sources + sigma * noise.to(sources)

    @torch.no_grad()
    def translate_latents(
        self,
        latents: torch.Tensor,
        direction: str = "a2b",
        steps: int | None = None,
        method: str | None = None,
        strength: float = 1.0,
        return_trajectory: bool = False,
        seed: int = 0,
        noise: torch.Tensor | None = None,
        guidance: float | None = None,
    ) -> Solution:
        """Integrate latents (batch, C, h, w): a2b runs t 0 -> strength, b2a 1 -> 1-strength,
        in ``steps`` steps of the solver ``method`` (None: ``default_steps``, ``default_method``)
        of the field with autoguidance weight ``guidance`` (None: ``default_guidance``; see
        ``field``).

        A source-noised model starts from ``start(latents, seed, noise)``."""
        TranslationOptions(direction, steps, method, strength, seed, guidance)  # ValueError
        steps = self.default_steps(direction) if steps is None else int(steps)
        method = self.default_method if method is None else method
        if guidance is not None and guidance != 1 and self.guide is None:
            raise ValueError(_no_guide(guidance))  # before any work
        t0, t1 = time_span(direction, strength)
        sources = latents.to(self.device).float()
        _, until = self._guided_span(direction, guidance)
        jumps = [] if until >= 1 else [until if direction == "a2b" else 1 - until]
        return integrate(
            self.velocity_field(sources, direction, guidance),
            self.start(sources, seed, noise),
            t0,
            t1,
            steps,
            method,
            return_trajectory=return_trajectory,
            jump_times=jumps,
        )

    def __call__(
        self,
        images: Sequence[Image.Image | str | Path] | Image.Image,
        direction: str = "a2b",
        steps: int | None = None,
        method: str | None = None,
        strength: float = 1.0,
        return_trajectory: bool = False,
        batch_size: int = 16,
        size: str = "model",
        seed: int = 0,
        guidance: float | None = None,
    ) -> list[Image.Image] | list[Trajectory]:
        """Translate images; one output per input, in order, in ``steps`` steps of the solver
        ``method`` with autoguidance weight ``guidance`` (None: the checkpoint's
        ``default_steps``, ``default_method`` and ``default_guidance``).

        ``size="model"`` returns resolution x resolution images (center-cropped);
        ``size="native"`` translates at the working size (see ``working_size``) and returns
        each image at its input's exact width and height. With ``return_trajectory`` each
        output is a ``Trajectory``: ``steps + 1`` frames from the source domain to the target
        (indexable like a list) and ``times``, the solver's time of each frame.
        Images of equal working size are batched together. A source-noised model's
        translation of an image is fixed by ``seed``; other seeds give other translations.
        """
        if isinstance(images, (Image.Image, str, Path)):
            images = [images]
        originals = [_load(im) for im in images]
        prepared = [self.prepare(im, size) for im in originals]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(prepared):
            groups.setdefault(image.size, []).append(index)
        results: list = [None] * len(prepared)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                latents = self.codec.encode(to_tensor([prepared[i] for i in chunk]))
                solution = self.translate_latents(
                    latents,
                    direction,
                    steps,
                    method,
                    strength,
                    return_trajectory,
                    seed,
                    guidance=guidance,
                )
                if not torch.isfinite(solution.x).all():
                    raise NonFiniteOutputError(
                        "the model's output is not finite (NaN or infinity): the checkpoint "
                        "is damaged or its training diverged"
                    )
                states = solution.trajectory if return_trajectory else solution.x[None]
                frames = [self.codec.decode_images(state) for state in states]  # (T, batch)
                for j, i in enumerate(chunk):
                    target = originals[i].size if size == "native" else None
                    per_image = [_resized(frame[j], target) for frame in frames]
                    if return_trajectory:
                        results[i] = Trajectory(per_image, solution.times.tolist())
                    else:
                        results[i] = per_image[0]
        return results

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents (batch, C, h, w) -> RGB images."""
        return to_pil(self.codec.decode(latents))


def _load_examples(folder: Path) -> dict[str, list[Image.Image]]:
    examples = {}
    for direction in DIRECTIONS:
        files = sorted((folder / direction).glob("*.png"))
        images = []
        for f in files:  # examples are optional: a damaged one is skipped, the model loads
            try:
                images.append(load_rgb(f))
            except (OSError, ValueError, SyntaxError, EOFError) as err:
                warnings.warn(f"skipped unreadable example {f}: {first_line(err)}", stacklevel=3)
        if images:
            examples[direction] = images
    return examples


def _load(image: Image.Image | str | Path) -> Image.Image:
    return load_rgb(image) if isinstance(image, (str, Path)) else as_srgb(image)


def _resized(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    if size is None or image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)
