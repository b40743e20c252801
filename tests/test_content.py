import math

import pytest
import torch
import torch.nn.functional as F

from translate.config import ConfigError, config_from_dict
from translate.content import (
    ContentTerm,
    PatchFeatures,
    colour_composition,
    colour_consistency,
    colour_layout,
    patch_nce,
    transport_cost,
)


def _term(seed=0, patches=64):
    return ContentTerm(4, patches, 0.07, 1e-3, "cpu", seed=seed)


def test_features_are_unit_vectors_per_location_and_layer():
    feats = PatchFeatures(4)(torch.randn(2, 4, 8, 8))
    assert [f.shape for f in feats] == [(2, 64, 64)] * 3
    for f in feats:
        torch.testing.assert_close(f.norm(dim=-1), torch.ones(2, 64))


def test_a_copy_of_the_source_scores_below_chance_and_a_moved_one_does_not():
    sources = torch.randn(8, 4, 16, 16)
    term, gen = _term(), torch.Generator().manual_seed(0)
    chance = math.log(64)  # 64 patches: the loss of features that tell nothing apart
    copy = term.loss(sources.clone(), sources, gen).item()
    moved = term.loss(torch.roll(sources, (5, 7), dims=(2, 3)), sources, gen).item()
    other = term.loss(sources.flip(0), sources, gen).item()  # another image's content
    assert copy < 0.5 * chance
    assert moved > chance and other > chance


def test_the_gradient_reaches_the_translation_and_the_features_not_the_source():
    sources = torch.randn(4, 4, 16, 16, requires_grad=True)
    translations = torch.randn(4, 4, 16, 16, requires_grad=True)
    term = _term()
    term.loss(translations, sources, torch.Generator().manual_seed(0)).backward()
    assert translations.grad.abs().sum() > 0
    assert sources.grad is None  # the keys are detached, as in CUT
    assert all(p.grad is not None for p in term.net.parameters())


def test_training_the_features_lowers_the_loss_of_a_consistent_translation():
    # a fixed "style change" (negate channel 0, add 1 to channel 1) keeps the content; the
    # feature net learns to see through it
    sources = torch.randn(16, 4, 8, 8)
    translations = sources.clone()
    translations[:, 0] *= -1
    translations[:, 1] += 1
    term, gen = _term(patches=32), torch.Generator().manual_seed(0)
    before = term.loss(translations, sources, gen).item()
    for _ in range(60):
        term.loss(translations, sources, gen).backward()
        term.step()
    assert term.loss(translations, sources, gen).item() < 0.5 * before


def test_patch_nce_is_the_cross_entropy_of_the_diagonal():
    q = torch.nn.functional.normalize(torch.randn(1, 5, 3), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(1, 5, 3), dim=-1)
    locations = torch.tensor([0, 2, 4])
    got = patch_nce(q, k, locations, 0.5)
    logits = (q[0, locations] @ k[0, locations].T) / 0.5
    expected = -torch.log_softmax(logits, dim=1).diagonal().mean()
    torch.testing.assert_close(got, expected)


def test_save_and_load_round_trip(tmp_path):
    term = _term()
    term.loss(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.Generator()).backward()
    term.step()
    term.save(tmp_path / "content")
    other = _term(seed=1)
    other.load(tmp_path / "content")
    for a, b in zip(term.net.state_dict().values(), other.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert other.optimizer.state_dict()["state"]  # the moments came back too
    with pytest.raises(FileNotFoundError):
        other.load(tmp_path / "missing")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"weight": 0.0, "nce_weight": 0.5}, "needs adversarial.weight > 0"),
        ({"nce_weight": -1.0}, "nce_weight must be >= 0"),
        ({"weight": 0.0, "transport_weight": 0.1}, "needs adversarial.weight > 0"),
        ({"transport_weight": -0.1}, "transport_weight must be >= 0"),
        ({"weight": 0.0, "colour_weight": 1.0}, "needs adversarial.weight > 0"),
        ({"colour_weight": -1.0}, "colour_weight must be >= 0"),
        ({"colour_weight": float("inf")}, "colour_weight must be >= 0 and finite"),
        ({"colour_weight": 1.0, "colour_match": "hue"}, "colour_match=.hue. is not one of"),
        ({"colour_weight": 1.0, "colour_cell": 0}, "colour_cell must be positive"),
        ({"nce_weight": 0.5, "nce_patches": 1}, "nce_patches must be >= 2"),
        ({"nce_weight": 0.5, "nce_temperature": 0.0}, "nce_temperature must be positive"),
    ],
)
def test_config_refuses_a_content_term_that_cannot_work(settings, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"adversarial": settings})


@pytest.mark.parametrize("cell", [5, 128])
def test_config_refuses_a_colour_cell_that_does_not_divide_the_resolution(cell):
    settings = {"adversarial": {"colour_weight": 1.0, "colour_cell": cell}}
    with pytest.raises(ConfigError, match=f"colour_cell={cell} must divide data.resolution=64"):
        config_from_dict({**settings, "data": {"resolution": 64}})
    settings["adversarial"]["colour_weight"] = 0.0  # off: the cell is never used
    config_from_dict({**settings, "data": {"resolution": 64}})


def test_transport_cost_is_the_mean_squared_distance_per_element():
    source = torch.zeros(2, 4, 8, 8)
    moved = source + torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(transport_cost(moved, source), torch.tensor(5.0))  # (1 + 9) / 2
    assert transport_cost(source, source) == 0


def _figure(skin, outline=(0, 0, 0), shirt=(40, 90, 200), size=16):
    """A flat drawing (1, 3, size, size) in [-1, 1]: a skin-coloured face above a shirt, a
    one-pixel outline around the face, on white. Colours are sRGB 0-255."""
    image = torch.full((3, size, size), 255.0)
    image[:, 2:9, 4:12] = torch.tensor(outline, dtype=torch.float32)[:, None, None]
    image[:, 3:8, 5:11] = torch.tensor(skin, dtype=torch.float32)[:, None, None]
    image[:, 10:15, 3:13] = torch.tensor(shirt, dtype=torch.float32)[:, None, None]
    return image[None] / 127.5 - 1


LIGHT, DARK = (250, 220, 188), (106, 70, 47)  # OpenMoji's lightest and darkest skin


def test_colour_composition_sees_the_skin_tone_not_the_outlines_or_the_layout():
    source = _figure(LIGHT)
    assert colour_composition(source, source).item() == pytest.approx(0.0, abs=1e-6)
    redrawn = torch.roll(_figure(LIGHT, outline=(128, 128, 128)), 2, dims=-1)  # grey lines
    darkened = _figure(DARK)
    assert colour_composition(redrawn, source).item() < 1e-4
    assert colour_composition(darkened, source).item() > 0.02


def test_colour_composition_pulls_a_translations_skin_towards_the_sources_tone():
    from translate.colour import srgb_to_lab

    source, translation = _figure(LIGHT).requires_grad_(), _figure(DARK).requires_grad_()
    optimizer = torch.optim.Adam([translation], lr=0.02)
    before = colour_composition(translation, source).item()
    for _ in range(150):
        optimizer.zero_grad()
        colour_composition(translation, source).backward()
        optimizer.step()
    assert source.grad is None  # the source's side is a fixed target
    skin = (slice(None), 0, slice(3, 8), slice(5, 11))  # L* of the face
    gap = srgb_to_lab(source)[skin].mean() - srgb_to_lab(translation.detach())[skin].mean()
    assert colour_composition(translation, source).item() < 0.25 * before
    assert gap.item() < 10  # from about 55 L* darker


def test_colour_layout_compares_cell_means_so_the_drawing_inside_a_cell_is_free():
    from translate.colour import srgb_to_lab

    source = _figure(LIGHT)
    assert colour_layout(source, source, 4).item() == 0
    swapped = source.clone()  # two pixels of one 4 x 4 cell trade places: the same cell mean
    swapped[..., 4, 4], swapped[..., 4, 5] = source[..., 4, 5], source[..., 4, 4]
    torch.testing.assert_close(colour_layout(swapped, source, 4), torch.tensor(0.0))
    moved = torch.roll(source, 4, dims=-1)  # the figure a whole cell to the right
    assert colour_layout(moved, source, 4).item() > 0.01
    lab = srgb_to_lab(torch.cat([source, _figure(DARK)]))
    expected = (F.avg_pool2d(lab[1:], 4) - F.avg_pool2d(lab[:1], 4)).div(100).square().mean()
    torch.testing.assert_close(colour_layout(_figure(DARK), source, 4), expected)


def test_colour_layout_pulls_the_skin_where_it_lies_and_the_choice_is_checked():
    from translate.colour import srgb_to_lab

    source, translation = _figure(LIGHT), _figure(DARK).requires_grad_()
    optimizer = torch.optim.Adam([translation], lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        colour_consistency(translation, source, "layout", 4).backward()
        optimizer.step()
    skin = (slice(None), 0, slice(3, 8), slice(5, 11))
    gap = srgb_to_lab(source)[skin].mean() - srgb_to_lab(translation.detach())[skin].mean()
    assert gap.item() < 10  # from about 55 L* darker
    images = (_figure(DARK), source)
    assert colour_consistency(*images, "composition", 4) == colour_composition(*images)
    with pytest.raises(ValueError, match="unknown colour match 'hue'"):
        colour_consistency(*images, "hue", 4)
