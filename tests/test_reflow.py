"""Reflow pairs: what a round draws, how its batches are drawn, and when rounds begin."""

import pytest
import torch

from translate.flow import time_span
from translate.latent_sampling import LatentSampler
from translate.reflow import (
    ReflowPairs,
    ReflowSource,
    generate_pairs,
    round_start,
    round_starts,
    translate_all,
)
from translate.solvers import integrate

SHIFT = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1)


def constant_field(x, t):
    """v = SHIFT everywhere: T_AB(a) = a + SHIFT and T_BA(b) = b - SHIFT exactly."""
    return SHIFT.expand_as(x)


def euler(field, nfe):
    """A ``translate.reflow.Translate``: ``nfe`` Euler steps of ``field`` over the span."""

    def translate(x, direction):
        t0, t1 = time_span(direction)
        return integrate(field, x, t0, t1, nfe, "euler").x

    return translate


@pytest.fixture
def latents():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, 2, 2, generator=g), torch.randn(7, 4, 2, 2, generator=g)


def test_both_pair_sets_keep_one_real_end_each(latents):
    a, b = latents
    pairs = generate_pairs(euler(constant_field, 3), a, b, pair_set="both")
    assert len(pairs) == 7 + 5
    # first (T_BA(b), b): the B end is the real latent; then (a, T_AB(a)): the A end is
    torch.testing.assert_close(pairs.x1[:7], b)
    torch.testing.assert_close(pairs.x0[:7], b - SHIFT)
    torch.testing.assert_close(pairs.x0[7:], a)
    torch.testing.assert_close(pairs.x1[7:], a + SHIFT)


@pytest.mark.parametrize("pair_set, real_end", [("a2b", "x1"), ("b2a", "x0")])
def test_one_pair_set_holds_only_its_direction(latents, pair_set, real_end):
    a, b = latents
    pairs = generate_pairs(euler(constant_field, 2), a, b, pair_set=pair_set)
    real = b if pair_set == "a2b" else a
    torch.testing.assert_close(getattr(pairs, real_end), real)
    torch.testing.assert_close(pairs.x1 - pairs.x0, SHIFT.expand_as(pairs.x0))


def test_pairs_are_the_translations_batch_by_batch_in_order(latents):
    a, b = latents
    calls = []

    def curved(x, direction):  # depends on x and on the direction
        calls.append((len(x), direction))
        return torch.sin(x) + (1.0 if direction == "a2b" else -1.0)

    pairs = generate_pairs(curved, a, b, pair_set="b2a")
    torch.testing.assert_close(pairs.x1, torch.sin(a) + 1)
    torch.testing.assert_close(pairs.x0, a)
    assert calls == [(5, "a2b")]
    calls.clear()
    chunked = translate_all(curved, b, "b2a", batch_size=3)
    torch.testing.assert_close(chunked, torch.sin(b) - 1)
    assert calls == [(3, "b2a"), (3, "b2a"), (1, "b2a")]
    with pytest.raises(ValueError, match="pair_set"):
        generate_pairs(curved, a, b, pair_set="forward")


def test_source_draws_whole_pairs_and_real_latents(latents):
    a, b = latents
    pairs = generate_pairs(euler(constant_field, 1), a, b)
    source = ReflowSource(pairs, LatentSampler(a), LatentSampler(b))

    class Gens:
        data = torch.Generator().manual_seed(3)

    pairing = source(4, Gens)
    torch.testing.assert_close(pairing.x1 - pairing.x0, SHIFT.expand(4, 4, 2, 2))  # rows kept
    real_a, real_b = pairing.real_ends
    assert all(any(torch.equal(r, x) for x in a) for r in real_a)  # drawn from the real sets
    assert all(any(torch.equal(r, x) for x in b) for r in real_b)
    assert 0 < pairing.cost_ratio < 2


def test_saved_pairs_load_exactly_and_refuse_other_settings(tmp_path, latents):
    a, b = latents
    pairs = generate_pairs(euler(constant_field, 1), a, b)
    path = tmp_path / "reflow" / "round-000002.safetensors"
    pairs.save(path, {"nfe": "1"})
    loaded = ReflowPairs.load(path, {"nfe": "1"})
    assert torch.equal(loaded.x0, pairs.x0) and torch.equal(loaded.x1, pairs.x1)
    with pytest.raises(ValueError, match="drawn with"):
        ReflowPairs.load(path, {"nfe": "4"})
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries left


@pytest.mark.parametrize(
    "share, rounds, steps, starts",
    [
        (0.0, 1, 800, []),  # off
        (0.25, 1, 800, [600]),  # the last quarter, one round
        (0.25, 2, 800, [600, 700]),
        (0.5, 2, 5, [3, 4]),  # round(2.5) = 2 reflow steps
        (0.01, 1, 10, []),  # less than one step
    ],
)
def test_round_starts(share, rounds, steps, starts):
    assert round_starts(share, rounds, steps) == starts


def test_round_start_is_the_round_of_the_coming_step():
    starts = [2, 4]
    assert [round_start(step, starts) for step in range(7)] == [None, None, 2, 2, 4, 4, 4]
