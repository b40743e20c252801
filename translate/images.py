"""Image I/O shared by training, inference and the tools: any mode to RGB, resizing, tensors."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from translate.errors import first_line

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ImageScan:
    """What a folder holds: image files, and links named like images that lead nowhere."""

    files: list[Path]  # sorted
    broken_links: list[Path]  # sorted


def scan_images(folder: Path) -> ImageScan:
    """Image files under ``folder``, recursively and sorted, hidden files and folders skipped.

    Symbolic links to folders are followed, each real folder visited once (a link back up the
    tree is no loop); a link named like an image whose target is missing is returned apart.
    """
    folder = Path(folder)
    files, broken, seen = [], [], set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        info = os.stat(top)
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(top, name)
            if name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists():
                broken.append(path)
    return ImageScan(sorted(files), sorted(broken))


def _to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth or float pixel values scaled by their real range to 0..255.

    Floats within [0, 1] are unit intensities; 16-bit modes, and any values above 255, are
    16-bit intensities; other values are taken as 8-bit. Non-finite values become 0.
    """
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
        return np.round(values * 255).astype(np.uint8)
    scale = 257.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
    return np.clip(values / scale, 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = Image.fromarray(_to_8bit(np.asarray(image, dtype=np.float64), image.mode))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """An image file as every part of the product reads it: ``read_image``'s RGB (first frame,
    EXIF-oriented, ICC converted to sRGB, transparency on white). Training, the latent cache,
    the stage-1 VAE, evaluation, the sample grids and inference all read files through here or
    ``read_image``. Raises ValueError with a short reason when the file cannot be read."""
    return read_image(path).rgb


def as_srgb(image: Image.Image) -> Image.Image:
    """An opened image by the same rule as ``load_rgb``: EXIF orientation applied, an embedded
    ICC profile converted to sRGB, any mode as 8-bit RGB with transparency on white."""
    return _srgb(ImageOps.exif_transpose(image), image.info.get("icc_profile"))


def _srgb(oriented: Image.Image, icc: bytes | None) -> Image.Image:
    rgb = to_rgb(oriented)
    return _to_srgb(rgb, icc) if icc else rgb


def center_square(image: Image.Image, size: int) -> Image.Image:
    """Crop the central ``size`` x ``size`` square (or the largest that fits)."""
    side = min(size, image.width, image.height)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def resize_center_crop(image: Image.Image, resolution: int, crop: int | None = None) -> Image.Image:
    """Optionally center-crop to ``crop`` px, resize the short side to ``resolution``, then crop.

    The result is ``resolution`` x ``resolution``.
    """
    if crop is not None:
        image = center_square(image, crop)
    scale = resolution / min(image.width, image.height)
    width = max(resolution, round(image.width * scale))
    height = max(resolution, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return center_square(image, resolution)


def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB images of one size as a float tensor in [-1, 1], shape (batch, 3, height, width)."""
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """Inverse of ``to_tensor``: pixels (batch, 3, height, width) in [-1, 1] to RGB images."""
    array = pixels.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return [Image.fromarray(a) for a in array.permute(0, 2, 3, 1).cpu().numpy()]


def grid(
    rows: Sequence[Sequence[Image.Image]], pad: int = 2, labels: Sequence[str] | None = None
) -> Image.Image:
    """Tile rows of equally sized images into one image on a white background.

    ``labels`` (one per row, may hold a newline) are written in a column on the left.
    """
    cell_w, cell_h = rows[0][0].size
    cols = max(len(r) for r in rows)
    font = ImageFont.load_default(size=max(9, min(14, cell_h // 5)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = 0
    if labels:
        label_w = max(measure.multiline_textbbox((0, 0), text, font=font)[2] for text in labels)
        label_w += 2 * pad
    canvas = Image.new(
        "RGB", (label_w + cols * (cell_w + pad) + pad, len(rows) * (cell_h + pad) + pad), WHITE
    )
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        top = pad + i * (cell_h + pad)
        if labels:
            draw.multiline_text(
                (pad, top + cell_h // 2), labels[i], fill=(0, 0, 0), font=font, anchor="lm"
            )
        for j, im in enumerate(row):
            canvas.paste(im.convert("RGB"), (label_w + pad + j * (cell_w + pad), top))
    return canvas


FLAT = "the image is one flat colour: nothing to translate"


def is_flat(image: Image.Image) -> bool:
    """True when every pixel of ``image`` has the same value in every band."""
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(low == high for low, high in bands)


def check_not_flat(image: Image.Image) -> None:
    """Raise ``ValueError`` (``FLAT``) for an image that is one flat colour.

    Such an input (e.g. a float TIFF read at the wrong scale) would translate to a picture of
    nothing that looks like a result; the converter and the app refuse it instead.
    """
    if is_flat(image):
        raise ValueError(FLAT)


@dataclass(frozen=True)
class SourceImage:
    """An input image made ready for the model, with what must be restored on output."""

    rgb: Image.Image  # EXIF-oriented, sRGB, alpha composited on white
    alpha: Image.Image | None  # mode "L", same size as ``rgb``; None when opaque
    note: str = ""  # something the user should know (e.g. only the first GIF frame was used)


def read_image(path: str | Path) -> SourceImage:
    """Open a user's image defensively; raise ``ValueError`` with a short reason if unusable.

    Applies the EXIF orientation, converts an embedded ICC profile to sRGB, keeps the alpha
    channel apart, refuses decompression bombs and reads only the first frame of animations.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                frames = getattr(image, "n_frames", 1)
                image.seek(0)
                image.load()
                oriented = ImageOps.exif_transpose(image)
                icc = image.info.get("icc_profile")
                has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                    image.mode == "P" and "transparency" in image.info
                )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError("image too large (over Pillow's decompression-bomb limit)") from None
    except FileNotFoundError:
        raise ValueError("file not found (a broken symbolic link, or it was removed)") from None
    except PermissionError:
        raise ValueError("permission denied") from None
    except UnidentifiedImageError:
        raise ValueError("not an image, or an unsupported format") from None
    except (OSError, SyntaxError, EOFError) as err:  # truncated or corrupt data
        raise ValueError(f"corrupt or truncated image ({first_line(err)})") from None
    alpha = oriented.convert("RGBA").getchannel("A") if has_alpha else None
    if alpha is not None and alpha.getextrema() == (255, 255):
        alpha = None
    rgb = _srgb(oriented, icc)
    note = f"animated ({frames} frames): converted the first frame" if frames > 1 else ""
    return SourceImage(rgb, alpha, note)


def restore_alpha(
    alpha: Image.Image | None, output: Image.Image, size: str = "native"
) -> Image.Image | None:
    """The input's alpha channel fitted to a translated output, or None when it had none.

    ``size`` is the Translator's mode: ``native`` outputs keep the input's shape, so the alpha
    is resized; ``model`` outputs are center-cropped squares, so the alpha is cropped the same way.
    """
    if alpha is None:
        return None
    if size == "model":
        return resize_center_crop(alpha, output.width)
    return alpha.resize(output.size, Image.Resampling.BICUBIC)


def with_alpha(image: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """``image`` as RGBA with ``alpha`` attached (unchanged when ``alpha`` is None)."""
    if alpha is None:
        return image
    image = image.convert("RGB")
    image.putalpha(alpha)
    return image


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """Convert RGB pixels from an embedded ICC profile to sRGB (unchanged if it can't be read)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image


_SRGB = ImageCms.createProfile("sRGB")


def read_source(path: str | Path) -> SourceImage:
    """An input as the converter and the app translate it (``read_image``); ValueError with the
    reason when it cannot be read or is one flat colour (``check_not_flat``)."""
    source = read_image(path)
    check_not_flat(source.rgb)
    return source
