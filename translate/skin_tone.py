"""Whether a translation keeps a figure's skin tone, on emoji named by their code points.

Unicode's five skin-tone modifiers (U+1F3FB..U+1F3FF, Fitzpatrick types 1-2 to 6; Unicode
Technical Standard #51, "Unicode Emoji", section 2.4) each have one flat skin colour per emoji
set, e.g. Twemoji's light tone is RGB (247, 222, 206). The foreground lightness of a whole
figure (``metrics.color_shift``) mixes the skin with clothes, hair and outlines, so it can call
a light face turned dark brown "lighter". This module measures the skin itself:

1. ``palette``: each set's colour of each tone, read from its real images. A tone's colour is
   the skin-like colour (in RGB bins 8 levels wide) that many images of that tone contain and few
   images of any other tone do, the one of most pixels among those: outlines, clothes and
   backgrounds appear with every tone and cancel.
2. ``skin_mask``: where a source image shows its tone's colour (RGB distance <= ``TOLERANCE``).
3. ``tone_scores``: the translation's median skin-like colour over the source's skin region
   (grown by ``GROW`` pixels), compared with the *target* set's colour of the same tone:
   ``kept`` when the nearest of the target's five tone colours (CIE76 distance in CIELAB) is
   the right one, ``delta_e`` the CIE76 distance to it, ``lightness`` the signed L* difference
   (negative: darker). The true counterparts themselves score about 90 % kept on the emoji
   pair, not 100 %: the two sets draw a figure in slightly different places.

Images are ``(n, 3, H, W)`` floats in ``[-1, 1]``; names are file stems such as
``1f44d-1f3fb``. An emoji with two different modifiers (two people of different tones) or
none is not measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from translate.colour import to_lab

# Unicode's skin-tone modifiers (U+1F3FB..U+1F3FF) as they appear in emoji file names
SKIN_TONES = ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")
BIN = 8  # palette estimation: RGB quantised to 256 / BIN levels per channel
MIN_IMAGES = 3  # images of a tone needed to read its colour from a set
MIN_PIXELS = 16  # skin pixels a source image needs to be measured
TOLERANCE = 20.0  # RGB distance (0-255) of a source's skin pixel from its tone's colour
GROW = 2  # pixels the source's skin region grows by to hold the translation's face
SPECIFICITY = 0.5  # palette: bins within this share of the most tone-specific bin compete


def tone_of(name: str) -> int | None:
    """The index (0-4) of the single skin-tone modifier in an emoji file name, else None
    (no modifier, or two different ones)."""
    found = {i for i, modifier in enumerate(SKIN_TONES) if modifier in name}
    return found.pop() if len(found) == 1 else None


def has_tone(name: str) -> bool:
    """Whether an emoji file name carries any skin-tone modifier (one tone or several)."""
    return any(modifier in name for modifier in SKIN_TONES)


def _rgb255(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> integer RGB in [0, 255], (n, 3, H, W)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().long()


def _skin_like() -> torch.Tensor:
    """(32**3,) bool: the RGB bins a skin colour can fall in, red > green > blue and not
    near black (every Unicode skin tone of every emoji set is such a brown or beige)."""
    centre = (torch.arange(32).float() + 0.5) * BIN
    r, g, b = torch.meshgrid(centre, centre, centre, indexing="ij")
    return ((r > g) & (g > b) & (r >= 64)).flatten()


SKIN_LIKE = _skin_like()


def palette(images: torch.Tensor, names: list[str]) -> torch.Tensor | None:
    """A set's skin colour per tone, (5, 3) RGB in [0, 255], read from its images (n, 3, H, W).

    None when any tone has fewer than ``MIN_IMAGES`` images (without all five the contrast
    between tones does not single out the skin) or no skin-like colour is specific to a tone.
    """
    found = [tone_of(n) for n in names]
    toned = [i for i, t in enumerate(found) if t is not None]
    tones = [found[i] for i in toned]
    if any(tones.count(tone) < MIN_IMAGES for tone in range(len(SKIN_TONES))):
        return None  # decided from the names alone: a large untoned set costs nothing
    rgb = _rgb255(images[toned])  # (m, 3, H, W): the toned images only
    bins = rgb // BIN
    keys = (bins[:, 0] * 1024 + bins[:, 1] * 32 + bins[:, 2]).flatten(1)  # (m, H*W)
    presence = []
    for tone in range(len(SKIN_TONES)):
        rows = [i for i, t in enumerate(tones) if t == tone]
        share = torch.zeros(32**3)
        for i in rows:
            share[keys[i].unique()] += 1
        presence.append(share / len(rows))
    presence = torch.stack(presence)  # (5, 32**3): share of a tone's images holding each bin
    colours = []
    for tone in range(len(SKIN_TONES)):
        rows = [i for i, t in enumerate(tones) if t == tone]
        others = torch.cat([presence[:tone], presence[tone + 1 :]]).amax(0)
        contrast = presence[tone] - others
        # of the bins nearly as tone-specific as the best, the one with the most pixels: the
        # skin's fill, not a tone's shading or a darker outline of the same tone
        near = (contrast >= SPECIFICITY * contrast.max()) & (contrast > 0) & SKIN_LIKE
        if not near.any():  # no skin-like colour belongs to this tone alone
            return None
        area = torch.bincount(keys[rows].flatten(), minlength=32**3).float()
        best = int(torch.where(near, area, -1.0).argmax())
        pixels = rgb[rows].permute(0, 2, 3, 1).reshape(-1, 3)[keys[rows].flatten() == best]
        colours.append(pixels.float().median(0).values)
    return torch.stack(colours)


def skin_mask(images: torch.Tensor, colours: torch.Tensor, tolerance: float = TOLERANCE):
    """Pixels within ``tolerance`` (RGB distance, 0-255 scale) of each image's skin colour.

    ``images`` (n, 3, H, W) in [-1, 1], ``colours`` (n, 3) RGB in [0, 255] -> (n, H, W) bool.
    """
    rgb = _rgb255(images).float()
    return (rgb - colours[:, :, None, None]).pow(2).sum(1).sqrt() <= tolerance


def skin_like(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) in [-1, 1] -> (n, H, W) bool: pixels a skin could be (red > green > blue,
    not near black, not the white background)."""
    r, g, b = _rgb255(images).float().unbind(1)
    white = (r >= 240) & (g >= 240) & (b >= 240)
    return (r > g) & (g > b) & (r >= 64) & ~white


def _lab(rgb: torch.Tensor) -> torch.Tensor:
    """RGB colours (m, 3) in [0, 255] -> CIELAB (m, 3)."""
    pixels = (rgb.float() / 127.5 - 1).T[None, :, :, None]  # (1, 3, m, 1)
    return to_lab(pixels)[0, :, :, 0].T


@dataclass
class ToneScores:
    """Per measured emoji (m,): the index into the inputs, the true tone (0-4), whether the
    nearest target tone is the true one, the CIE76 distance and the L* difference (translated
    minus the target set's colour of the true tone; negative: darker)."""

    index: torch.Tensor
    tone: torch.Tensor
    kept: torch.Tensor
    delta_e: torch.Tensor
    lightness: torch.Tensor


def tone_scores(
    translations: torch.Tensor,
    sources: torch.Tensor,
    names: list[str],
    source_palette: torch.Tensor,
    target_palette: torch.Tensor,
) -> ToneScores:
    """Score translations (n, 3, H, W) of ``sources`` (n, 3, H, W) named ``names``.

    The face is where the source shows its set's colour of its tone (``skin_mask``), grown
    by ``GROW`` pixels, because a translation keeps the source's layout only roughly; the
    translation's skin colour is the median RGB of its ``skin_like`` pixels there. Emoji
    without a single tone, or with fewer than ``MIN_PIXELS`` skin pixels in the source, are
    left out; those with fewer than ``MIN_PIXELS // 2`` skin-like pixels in the translation's
    region (its skin gone grey, black or white) count as not kept, with NaN colour scores.
    Distances are CIE76 (ΔE*ab, the Euclidean distance in CIELAB, CIE 1976).
    """
    tones = [tone_of(n) for n in names]
    rows = [i for i, t in enumerate(tones) if t is not None]
    tone = torch.tensor([tones[i] for i in rows], dtype=torch.long)
    index = torch.tensor(rows, dtype=torch.long)
    if rows:
        mask = skin_mask(sources[index], source_palette[tone])
        enough = mask.flatten(1).sum(1) >= MIN_PIXELS
        index, tone, mask = index[enough], tone[enough], mask[enough]
    if not len(index):
        empty = torch.zeros(0)
        return ToneScores(index, tone, empty.bool(), empty, empty)
    region = F.max_pool2d(mask.float()[:, None], 2 * GROW + 1, 1, GROW)[:, 0] > 0.5
    region &= skin_like(translations[index])
    rgb = _rgb255(translations[index]).permute(0, 2, 3, 1).float()  # (m, H, W, 3)
    found = region.flatten(1).sum(1) >= MIN_PIXELS // 2
    skin = torch.zeros(len(index), 3)  # (m, 3): the median skin-like RGB of each region
    for k in torch.nonzero(found).flatten().tolist():
        skin[k] = rgb[k][region[k]].median(0).values
    lab, targets = _lab(skin), _lab(target_palette)
    distance = torch.cdist(lab, targets)  # (m, 5): CIE76 to each of the target's tones
    nan = torch.full((len(index),), float("nan"))
    return ToneScores(
        index=index,
        tone=tone,
        kept=(distance.argmin(1) == tone) & found,
        delta_e=torch.where(found, distance.gather(1, tone[:, None])[:, 0], nan),
        lightness=torch.where(found, lab[:, 0] - targets[tone, 0], nan),
    )
