"""The overlapped pairing stream gives exactly the serial loop's batches, and resumes exactly."""

import pytest
import torch

from translate.coupling import ExactOTCoupler, MinibatchPairs, SinkhornCoupler
from translate.latent_sampling import LatentSampler
from translate.prefetch import Generators, PairStream


def _stream(coupler, overlap, states=None):
    g = torch.Generator().manual_seed(5)
    latents_a, latents_b = (
        torch.randn(40, 2, 4, 4, generator=g),
        torch.randn(30, 2, 4, 4, generator=g),
    )
    gens = Generators.create(seed=3, rank=0, device=torch.device("cpu"))
    if states:
        gens.restore(states)
    a, b = LatentSampler(latents_a), LatentSampler(latents_b)
    return PairStream(MinibatchPairs(a, b, coupler), 8, gens, overlap)


@pytest.mark.parametrize(
    "coupler", [ExactOTCoupler(), SinkhornCoupler(0.05)], ids=["exact", "sinkhorn"]
)
def test_overlap_is_bit_identical_to_serial(coupler):
    serial, overlapped = _stream(coupler, False), _stream(coupler, True)
    try:
        for _ in range(6):
            p, q = serial.next(), overlapped.next()
            assert torch.equal(p.x0, q.x0) and torch.equal(p.x1, q.x1)
            assert p.cost_ratio == q.cost_ratio
    finally:
        overlapped.close()


@pytest.mark.parametrize("overlap", [False, True])
def test_generator_state_resumes_the_same_batches(overlap):
    coupler = SinkhornCoupler(0.05)  # draws from the coupling generator too
    reference = _stream(coupler, False)
    expected = [reference.next() for _ in range(5)]
    first = _stream(coupler, overlap)
    for _ in range(3):
        first.next()
    states = first.generator_state()  # a checkpoint after step 3 (step 4 may be computed)
    first.close()
    resumed = _stream(coupler, overlap, states)
    try:
        for want in expected[3:]:
            got = resumed.next()
            assert torch.equal(got.x0, want.x0) and torch.equal(got.x1, want.x1)
    finally:
        resumed.close()


def test_worker_errors_reach_the_trainer():
    class Broken:
        def __call__(self, x0, x1, generator):
            raise RuntimeError("solver failed")

    stream = _stream(Broken(), True)
    with pytest.raises(RuntimeError, match="solver failed"):
        stream.next()
    with pytest.raises(RuntimeError, match="solver failed"):
        stream.close()


def test_plan_pairs_draw_distinct_rows_with_their_plan_partners():
    from translate.coupling import DatasetPlan, PlanPairs

    g = torch.Generator().manual_seed(0)
    latents_a, latents_b = torch.randn(40, 2, 3, 3, generator=g), torch.randn(40, 2, 3, 3)
    plan = DatasetPlan.solve(latents_a, latents_b)
    partner = plan.partners(torch.arange(40), torch.Generator())
    source = PlanPairs(LatentSampler(latents_a), LatentSampler(latents_b), plan)
    gens = Generators.create(seed=3, rank=0, device=torch.device("cpu"))
    pairing = source(16, gens)
    rows = [int(torch.where((latents_a == r).all(dim=(1, 2, 3)))[0]) for r in pairing.x0]
    assert len(set(rows)) == 16
    torch.testing.assert_close(pairing.x1, latents_b[partner[rows]])
    assert pairing.cost_ratio == plan.cost_ratio < 1
