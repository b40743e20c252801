"""Colour histograms: where the colours are is left out, how much of each colour is kept."""

import pytest
import torch

from translate.colour import colour_histograms, to_lab


def _flat(rgb, size=8):
    """An image (1, 3, size, size) in [-1, 1] of one sRGB colour (0-255 per channel)."""
    colour = torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1
    return colour[None, :, None, None].expand(1, 3, size, size).clone()


def test_rows_are_square_roots_of_shares_and_ignore_the_layout():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 8, 8, generator=g) * 1.6 - 1  # no pixel as light as the background
    shuffled = image.flatten(2)[..., torch.randperm(64, generator=g)].reshape(1, 3, 8, 8)
    a, b = colour_histograms(torch.cat([image, shuffled]), bins=6)
    assert a.shape == (216,) and a.pow(2).sum().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(a, b)  # the same pixels anywhere: the same histogram


def test_a_flat_colour_peaks_at_its_nearest_centre_and_the_background_is_left_out():
    bins = 5  # centres: L* 0, 25, 50, 75, 100; a*, b* -80, -40, 0, 40, 80
    red = _flat((200, 30, 30))
    lab = to_lab(red)[0, :, 0, 0]
    hist = colour_histograms(red, bins)[0].reshape(bins, bins, bins)
    nearest = [
        int(torch.argmin((torch.linspace(lo, hi, bins) - v).abs()))
        for v, lo, hi in zip(lab.tolist(), (0, -80, -80), (100, 80, 80), strict=True)
    ]
    assert tuple(int(i) for i in (hist == hist.max()).nonzero()[0]) == tuple(nearest)
    white = _flat((255, 255, 255))
    assert colour_histograms(white, bins).abs().max().item() == 0  # all background: zeros
    red_on_white = torch.cat([red, white], dim=-1)  # half the pixels are background
    torch.testing.assert_close(colour_histograms(red_on_white, bins), colour_histograms(red, bins))


def test_the_skin_tone_decides_where_a_pixel_distance_follows_the_layout():
    light, dark = (240, 200, 170), (120, 80, 60)  # two skin tones
    shirt = _flat((40, 90, 200), size=16)

    def figure(skin, corner):  # a 4 x 4 face on a 16 x 16 shirt, top left or bottom right
        image = shirt.clone()
        rows = slice(0, 4) if corner == "top" else slice(12, 16)
        image[..., rows, rows] = _flat(skin, size=4)
        return image

    source, moved, darker = figure(light, "top"), figure(light, "bottom"), figure(dark, "top")
    h = colour_histograms(torch.cat([source, moved, darker]), bins=12)
    assert (h[0] - h[1]).abs().max().item() < 1e-6  # the same colours elsewhere
    assert (h[0] - h[2]).pow(2).sum().item() > 0.1  # a sixteenth of the pixels in another tone
    pixel = lambda x, y: (x - y).pow(2).mean().item()  # noqa: E731
    assert pixel(source, moved) > pixel(source, darker)  # pixels: the moved face is farther


def test_too_few_bins_raise():
    with pytest.raises(ValueError, match="at least 2 bins"):
        colour_histograms(_flat((0, 0, 0)), bins=1)


def test_the_differentiable_conversion_agrees_with_littlecms_and_has_a_gradient():
    from translate.colour import srgb_to_lab

    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (4, 3, 16, 16), generator=g).float()
    images = (levels / 127.5 - 1).requires_grad_()
    ours, reference = srgb_to_lab(images), to_lab(images.detach())
    assert (ours - reference).abs().amax().item() < 1.0  # LittleCMS rounds to 8 bits
    ours.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
