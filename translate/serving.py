"""What the web app does per request, free of any UI code: checked uploads in, images out.

Uploads are read defensively (``images.read_image``): EXIF orientation, ICC to sRGB, alpha kept
apart, Pillow's decompression-bomb limit. Outputs keep the input's size and aspect ratio by the
same rule as the folder converter (``Translator(..., size="native")``), and get the input's alpha
back. Every refusal is a ``ValueError`` with a short message meant for the user.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from PIL import Image

from translate.images import SourceImage, read_source, restore_alpha, with_alpha
from translate.pipeline import TranslationOptions, Translator, finite_outputs, span_text

MAX_UPLOAD_MB = 20  # per file; the web server enforces it too
# per image: a small file can hold a huge picture (6000 x 6000 px is 0.1 MB as a flat PNG) whose
# decoding and native-size resizing would block the queue for a minute
MAX_MEGAPIXELS = 16.0
PREVIEW_SIDE = 512  # px: the path's frames and GIF are shown at most this large
MAX_STEPS = 64
OBJECTIVE_NAMES = {
    "ot-cfm": "OT-CFM (exact minibatch optimal transport)",
    "i-cfm": "I-CFM (independent coupling)",
    "sb-cfm": "SB-CFM (Schrödinger bridge: noise around optimal-transport pairs)",
}


@dataclass(frozen=True)
class Translation:
    """One translated upload."""

    image: Image.Image  # the input's width and height; RGBA when the input had alpha
    frames: list[Image.Image]  # steps + 1 frames along the path, source first
    times: list[float]  # the t of each frame (0 = domain A, 1 = domain B)
    note: str = ""  # e.g. "animated (12 frames): converted the first frame"


def direction_labels(translator: Translator) -> dict[str, str]:
    """{"A → B" style label: direction}, named by the checkpoint's domains."""
    a, b = translator.domains
    return {f"{a} → {b}": "a2b", f"{b} → {a}": "b2a"}


def open_upload(
    path: str | Path | None,
    max_mb: float = MAX_UPLOAD_MB,
    max_megapixels: float = MAX_MEGAPIXELS,
) -> SourceImage:
    """An uploaded file made ready for the model, or ``ValueError`` saying why not.

    The byte size and the pixel count (read from the header, before decoding) are limited; an
    image of one flat colour is refused, as the folder converter refuses it.
    """
    if path is None:
        raise ValueError("no image given: upload one first")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise ValueError("the upload could not be read") from None
    if size == 0:
        raise ValueError("the upload is empty (0 bytes)")
    if size > max_mb * 2**20:
        raise ValueError(f"the upload is {size / 2**20:.1f} MB; the limit is {max_mb:g} MB")
    try:
        with Image.open(path) as header:
            width, height = header.size
    except Exception:
        width = height = 0  # not an image: read_image says why
    if width * height > max_megapixels * 1e6:
        raise ValueError(
            f"the image is {width}×{height} px ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_megapixels:g} megapixels"
        )
    return read_source(path)


def served_steps(translator: Translator, direction: str) -> int:
    """The step count a request for ``direction`` without one gets: the checkpoint's
    ``default_steps(direction)``, at most ``MAX_STEPS``."""
    return min(translator.default_steps(direction), MAX_STEPS)


def check_settings(
    direction: str,
    steps: int | None,
    method: str | None,
    strength: float,
    seed: int = 0,
    guidance: float | None = None,
) -> None:
    """``ValueError`` for settings a request may not use: ``TranslationOptions``' rules and,
    so that one request cannot hold the queue, at most ``MAX_STEPS`` steps (None, the
    checkpoint's own, is resolved by ``served_steps``; a method or guidance of None is the
    checkpoint's ``default_method`` or ``default_guidance``)."""
    TranslationOptions(direction, steps, method, float(strength), seed, guidance)
    if steps is not None and int(steps) > MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}")


def translate_upload(
    translator: Translator,
    path: str | Path | None,
    direction: str = "a2b",
    steps: int | None = None,
    method: str | None = None,
    strength: float = 1.0,
    max_mb: float = MAX_UPLOAD_MB,
    max_megapixels: float = MAX_MEGAPIXELS,
    seed: int = 0,
    guidance: float | None = None,
) -> Translation:
    """Translate one uploaded file at its own size, with the path's frames; ``steps`` None:
    ``served_steps``; ``method`` and ``guidance`` None: the checkpoint's own."""
    check_settings(direction, steps, method, strength, seed, guidance)
    steps = served_steps(translator, direction) if steps is None else int(steps)
    source = open_upload(path, max_mb, max_megapixels)
    (frames,) = translator(
        [source.rgb],
        direction,
        steps,
        method,
        float(strength),
        return_trajectory=True,
        size="native",
        seed=int(seed),
        guidance=guidance,
    )
    image = with_alpha(frames[-1], restore_alpha(source.alpha, frames[-1]))
    return Translation(image, [preview(f) for f in frames], frames.times, source.note)


def translate_many(
    translator: Translator,
    paths: Sequence[str | Path],
    direction: str = "a2b",
    steps: int | None = None,
    method: str | None = None,
    strength: float = 1.0,
    batch_size: int = 16,
    max_mb: float = MAX_UPLOAD_MB,
    names: Sequence[str] | None = None,
    max_megapixels: float = MAX_MEGAPIXELS,
    seed: int = 0,
    guidance: float | None = None,
) -> tuple[list[tuple[str, Image.Image]], list[tuple[str, str]]]:
    """Translate several uploads; bad files are skipped, never fatal.

    ``names`` are what the user called the files (default: the paths' base names). Returns
    ``([(name, image)], [(name, reason)])``: the outputs in input order, and the files that
    could not be read or whose translation is not finite, with the reason. ``method`` and
    ``guidance`` None: the checkpoint's own.
    """
    check_settings(direction, steps, method, strength, seed, guidance)
    steps = served_steps(translator, direction) if steps is None else int(steps)
    names = list(names) if names is not None else [Path(p).name for p in paths]
    good: list[tuple[str, SourceImage]] = []
    failed: list[tuple[str, str]] = []
    for name, path in zip(names, paths, strict=True):
        try:
            good.append((name, open_upload(path, max_mb, max_megapixels)))
        except ValueError as err:
            failed.append((name, str(err)))
    if not good:
        return [], failed
    outputs = finite_outputs(
        lambda images: translator(
            images,
            direction,
            steps,
            method,
            float(strength),
            batch_size=batch_size,
            size="native",
            seed=int(seed),
            guidance=guidance,
        ),
        [source.rgb for _, source in good],
    )
    results = []
    for (name, source), out in zip(good, outputs, strict=True):
        if isinstance(out, str):
            failed.append((name, out))
        else:
            results.append((name, with_alpha(out, restore_alpha(source.alpha, out))))
    return results, failed


def output_names(names: Sequence[str]) -> list[str]:
    """PNG file names for outputs: each input's stem, made unique within the batch.

    Client names are never paths: only the last component survives, whichever separator
    (``/`` or ``\\``) or drive prefix it came with, and leading dots are dropped.
    """
    taken: set[str] = set()
    result = []
    for name in names:
        stem = PureWindowsPath(str(name)).stem.lstrip(".").strip() or "image"
        candidate, count = f"{stem}.png", 0
        while candidate.lower() in taken:
            count += 1
            candidate = f"{stem}-{count}.png"
        taken.add(candidate.lower())
        result.append(candidate)
    return result


def zip_images(images: Sequence[tuple[str, Image.Image]], target: str | Path) -> Path:
    """Write ``(name, image)`` pairs as PNGs into one zip file."""
    target = Path(target)
    names = output_names([name for name, _ in images])
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, (_, image) in zip(names, images, strict=True):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())
    return target


def preview(image: Image.Image, side: int = PREVIEW_SIDE) -> Image.Image:
    """An RGB copy at most ``side`` pixels on its long side (path frames, GIFs)."""
    image = image.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def trajectory_gif(frames: Sequence[Image.Image], target: str | Path, ms: int = 120) -> Path:
    """An animated GIF of the path, pausing on the last frame, looping forever."""
    target = Path(target)
    frames = [preview(frame) for frame in frames]
    durations = [ms] * (len(frames) - 1) + [ms * 8]
    frames[0].save(
        target, save_all=True, append_images=frames[1:], duration=durations, loop=0, disposal=2
    )
    return target


def default_steps_text(translator: Translator) -> str:
    """The served default step counts: ``4``, or ``A→B 4, B→A 8`` where the directions'
    differ (the model card and the app's steps slider show it)."""
    steps = {d: served_steps(translator, d) for d in ("a2b", "b2a")}
    if steps["a2b"] == steps["b2a"]:
        return str(steps["a2b"])
    return f"A→B {steps['a2b']}, B→A {steps['b2a']}"


def model_card(translator: Translator) -> str:
    """A short Markdown description of the loaded checkpoint."""
    info = translator.info
    config = info.config
    vae = info.vae.get("pretrained") or "the project's own, trained on both domains (stage 1)"
    objective = OBJECTIVE_NAMES.get(info.objective, info.objective)
    if info.sigma:
        objective += f", σ = {info.sigma:g}"
    rows = [
        ("Domains", f"A: {info.domain_a} · B: {info.domain_b}"),
        ("Resolution", f"{info.resolution} px"),
        ("Training steps", f"{info.step:,}"),
        ("Objective", objective),
        ("VAE", vae),
        ("Default steps", f"{default_steps_text(translator)} ({translator.default_method})"),
    ]
    if translator.guided:
        arrows = {"a2b": "A→B", "b2a": "B→A"}
        weights = [
            f"{arrows[d]} {translator.default_guidance(d):g}"
            + (
                span_text(translator.guidance_until(d))
                if translator.default_guidance(d) != 1
                else ""
            )
            for d in arrows
        ]
        rows.append(("Autoguidance", f"{', '.join(weights)} (two UNets per guided step)"))
    model = config.get("model", {})
    if model.get("block_out_channels"):
        rows.append(("UNet", f"channels {model['block_out_channels']}"))
    data = config.get("data", {})
    if data.get("source"):
        rows.append(("Data", str(data["source"])))
    lines = ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]
    return "\n".join(lines)
