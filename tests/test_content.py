import math

import pytest
import torch

from translate.config import ConfigError, config_from_dict
from translate.content import ContentTerm, PatchFeatures, patch_nce, transport_cost


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
        ({"nce_weight": 0.5, "nce_patches": 1}, "nce_patches must be >= 2"),
        ({"nce_weight": 0.5, "nce_temperature": 0.0}, "nce_temperature must be positive"),
    ],
)
def test_config_refuses_a_content_term_that_cannot_work(settings, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"adversarial": settings})


def test_transport_cost_is_the_mean_squared_distance_per_element():
    source = torch.zeros(2, 4, 8, 8)
    moved = source + torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(transport_cost(moved, source), torch.tensor(5.0))  # (1 + 9) / 2
    assert transport_cost(source, source) == 0
