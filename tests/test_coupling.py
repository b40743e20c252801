import numpy as np
import ot
import pytest
import torch

from translate.config import FlowConfig
from translate.coupling import (
    ExactOTCoupler,
    GlobalCoupler,
    IndependentCoupler,
    SinkhornCoupler,
    UnbalancedCoupler,
    build_coupler,
    pairing_cost,
    pairwise_cost,
    sample_pairs,
    unbalanced_plan,
)


def _batches(n=32, seed=0, shape=(4, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g) + 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_is_a_permutation_with_the_emd_optimum(seed):
    x0, x1 = _batches(seed=seed)
    pairing = ExactOTCoupler()(x0, x1, torch.Generator())
    # every A row kept in order, every B row used exactly once
    torch.testing.assert_close(pairing.x0, x0)
    matched = [int(torch.where((x1 == row).all(dim=(1, 2, 3)))[0]) for row in pairing.x1]
    assert sorted(matched) == list(range(len(x1)))
    cost = pairwise_cost(x0, x1).numpy()
    n = len(x0)
    optimum = ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), cost)
    ours = cost[np.arange(n), matched].mean()
    assert ours == pytest.approx(optimum, rel=1e-9)
    assert pairing.cost_ratio < 1.0


def test_independent_keeps_the_draws():
    x0, x1 = _batches()
    pairing = IndependentCoupler()(x0, x1, torch.Generator())
    assert torch.equal(pairing.x0, x0) and torch.equal(pairing.x1, x1)


def test_cost_resolution_pools_before_the_cost():
    x0, x1 = _batches(shape=(4, 8, 8))
    assert pairwise_cost(x0, x1, cost_resolution=2).shape == (32, 32)
    pooled = torch.nn.functional.adaptive_avg_pool2d
    expected = (
        torch.cdist(pooled(x0, 2).flatten(1).double(), pooled(x1, 2).flatten(1).double()) ** 2
    )
    torch.testing.assert_close(pairwise_cost(x0, x1, 2), expected)


def test_sinkhorn_samples_pairs_from_the_plan():
    x0, x1 = _batches()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = SinkhornCoupler(reg=0.05)(x0, x1, g1)
    b = SinkhornCoupler(reg=0.05)(x0, x1, g2)
    assert a.x0.shape == x0.shape and torch.equal(a.x1, b.x1)  # seeded: reproducible
    assert a.cost_ratio < 1.0  # low entropy: close to the OT pairing


def _with_outliers(n=32, far=4, seed=0):
    """A batch pair whose last ``far`` B rows lie far from every A row."""
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)
    x1[-far:] += 20.0
    return x0, x1


def test_unbalanced_plan_draws_far_rows_less_often_than_the_balanced_one():
    x0, x1 = _with_outliers()
    outliers = x1[-4:]

    def far_share(coupler):
        drawn = torch.cat([coupler(x0, x1, torch.Generator().manual_seed(s)).x1 for s in range(50)])
        return (drawn[:, None] == outliers[None]).all(-1).any(-1).double().mean().item()

    # balanced: every B row is some A row's partner, so the 4 outliers are 1/8 of all pairs
    assert far_share(ExactOTCoupler()) == 4 / 32
    assert far_share(UnbalancedCoupler(reg=0.01, tau=0.95)) < 0.01


def test_unbalanced_plan_is_pots_and_stays_finite_where_pots_kernel_underflows():
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(7, 3, generator=g), torch.randn(5, 3, generator=g)
    cost = pairwise_cost(x0, x1)
    cost = cost / cost.mean()
    ours = unbalanced_plan(cost, 0.05, 0.8).numpy()
    pots = ot.unbalanced.sinkhorn_unbalanced(
        np.full(7, 1 / 7),
        np.full(5, 1 / 5),
        cost.numpy(),
        0.05,
        0.05 * 0.8 / 0.2,
        reg_type="kl",
        numItermax=10000,
        stopThr=1e-12,
    )
    np.testing.assert_allclose(ours, pots, rtol=1e-6, atol=1e-12)
    assert ours.sum() < 0.99  # the relaxed marginals: mass was dropped
    x0, x1 = _with_outliers()  # exp(-cost / reg) underflows to 0 for the far rows
    cost = pairwise_cost(x0, x1)
    plan = unbalanced_plan(cost / cost.mean(), 0.01, 0.95)
    assert torch.isfinite(plan).all() and plan[:, -4:].sum() < 1e-6 * plan.sum()


def test_unbalanced_coupler_samples_its_plan():
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    cost = pairwise_cost(x0, x1).numpy()
    plan = unbalanced_plan(torch.as_tensor(cost / cost.mean()), 0.1, 0.8).numpy()
    rows, cols = UnbalancedCoupler(reg=0.1, tau=0.8).match(cost, torch.Generator().manual_seed(5))
    expected = sample_pairs(plan, 6, torch.Generator().manual_seed(5))
    assert rows.tolist() == expected[0].tolist() and cols.tolist() == expected[1].tolist()
    counts = np.zeros((6, 6))
    rows, cols = sample_pairs(plan, 60000, torch.Generator().manual_seed(0))
    np.add.at(counts, (rows, cols), 1)
    np.testing.assert_allclose(counts / counts.sum(), plan / plan.sum(), atol=0.006)
    with pytest.raises(ValueError, match="tau"):
        UnbalancedCoupler(reg=0.1, tau=1.0)


def test_build_coupler_by_objective():
    assert isinstance(build_coupler(FlowConfig(objective="ot-cfm")), ExactOTCoupler)
    assert isinstance(build_coupler(FlowConfig(objective="i-cfm")), IndependentCoupler)
    assert isinstance(build_coupler(FlowConfig(objective="sb-cfm", sigma=0.1)), SinkhornCoupler)
    exact_bridge = FlowConfig(objective="sb-cfm", sigma=0.1, sinkhorn_reg=0.0)
    assert isinstance(build_coupler(exact_bridge), ExactOTCoupler)
    unbalanced = build_coupler(FlowConfig(unbalanced_tau=0.95))
    assert isinstance(unbalanced, UnbalancedCoupler)
    assert (unbalanced.tau, unbalanced.reg) == (0.95, 0.01)


def test_global_coupler_slices_one_plan():
    x0, x1 = _batches(n=16)
    full = ExactOTCoupler()(x0, x1, torch.Generator())
    parts = [(x0[:8], x1[:8]), (x0[8:], x1[8:])]

    def gather_from(parts, which):
        return lambda _tensor: torch.cat([p[which] for p in parts])

    for rank in range(2):
        calls = iter([0, 1])
        coupler = GlobalCoupler(
            ExactOTCoupler(), lambda t, c=calls: gather_from(parts, next(c))(t), rank, 2
        )
        mine = coupler(*parts[rank], torch.Generator())
        torch.testing.assert_close(mine.x0, full.x0[rank * 8 : rank * 8 + 8])
        torch.testing.assert_close(mine.x1, full.x1[rank * 8 : rank * 8 + 8])


def test_unequal_batches_raise():
    with pytest.raises(ValueError, match="equal size"):
        ExactOTCoupler()(torch.zeros(3, 2), torch.zeros(4, 2), torch.Generator())


def test_dataset_plan_is_the_emd_optimum_and_a_permutation_for_equal_sets():
    from translate.coupling import DatasetPlan

    x0, x1 = _batches(n=60, seed=3)
    plan = DatasetPlan.solve(x0, x1)
    assert plan.start.tolist() == list(range(61))  # one partner per row
    partners = plan.partners(torch.arange(60), torch.Generator())
    assert sorted(partners.tolist()) == list(range(60))
    cost = pairwise_cost(x0, x1).numpy()
    optimum = ot.emd2(np.full(60, 1 / 60), np.full(60, 1 / 60), cost)
    assert cost[np.arange(60), partners.numpy()].mean() == pytest.approx(optimum, rel=1e-9)
    assert plan.cost_ratio == pytest.approx(optimum / cost.mean())


def test_dataset_plan_of_unequal_sets_draws_partners_by_the_plan():
    from translate.coupling import DatasetPlan

    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(30, 2, generator=g), torch.randn(20, 2, generator=g)  # plain 2-D data
    plan = DatasetPlan.solve(x0, x1)
    dense = ot.emd(np.full(30, 1 / 30), np.full(20, 1 / 20), pairwise_cost(x0, x1).numpy())
    rows = torch.arange(30).repeat(4000)
    cols = plan.partners(rows, torch.Generator().manual_seed(1))
    counts = np.zeros((30, 20))
    np.add.at(counts, (rows.numpy(), cols.numpy()), 1)
    assert (counts[dense == 0] == 0).all()  # never a pair outside the plan
    np.testing.assert_allclose(counts / counts.sum(), dense, atol=0.004)


def test_dataset_plan_refuses_data_too_large(monkeypatch):
    from translate import coupling

    monkeypatch.setattr(coupling, "MAX_DATASET_PAIRS", 100)
    with pytest.raises(coupling.TranslateError, match="flow.scope=local or global"):
        coupling.DatasetPlan.solve(torch.zeros(11, 3), torch.zeros(10, 3))


def test_plan_by_name_pairs_each_file_with_its_namesake():
    from translate.coupling import DatasetPlan, TranslateError

    g = torch.Generator().manual_seed(0)
    names_a = ["trainA/x.png", "trainA/y.png", "trainA/x.png#flip"]
    names_b = ["trainB/y.png", "trainB/x.png#flip", "trainB/z.png", "trainB/x.png"]
    a, b = torch.randn(3, 2, 2, generator=g), torch.randn(4, 2, 2, generator=g)
    plan = DatasetPlan.by_name(names_a, names_b, a, b)
    assert plan.partners(torch.arange(3), g).tolist() == [3, 0, 1]
    paired = (a - b[[3, 0, 1]]).flatten(1).pow(2).sum(1).mean()
    assert plan.cost_ratio == pytest.approx(float(paired / pairwise_cost(a, b).mean()))
    with pytest.raises(TranslateError, match=r"1 of 2 A training files .*w\.png"):
        DatasetPlan.by_name(["trainA/x.png", "trainA/w.png"], names_b, a[:2], b)


def test_colour_weight_zero_is_the_latent_cost_and_w_scales_the_colour_cost_to_w_times():
    x0, x1 = _batches()
    g = torch.Generator().manual_seed(1)
    c0, c1 = torch.rand(32, 10, generator=g), torch.rand(32, 10, generator=g)
    latent = pairwise_cost(x0, x1)
    assert torch.equal(pairing_cost(x0, x1, None, (c0, c1), 0.0), latent)
    assert torch.equal(pairing_cost(x0, x1), latent)
    colour = pairwise_cost(c0, c1)
    both = pairing_cost(x0, x1, None, (c0, c1), 2.0)
    torch.testing.assert_close(both, latent + 2.0 * latent.mean() / colour.mean() * colour)
    assert (both - latent).mean().item() == pytest.approx(2 * latent.mean().item())
    with pytest.raises(ValueError, match="colour features"):
        pairing_cost(x0, x1, None, None, 1.0)


def test_a_colour_weighted_plan_pairs_by_colour_where_the_latents_cannot_tell():
    # latents: every B row equally far from every A row but for noise; colours: B row j
    # carries the colour of A row perm[j]
    n = 16
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(n, 2, 2, 2)
    x1 = torch.randn(n, 2, 2, 2, generator=g) * 1e-3 + 5.0
    c0 = torch.eye(n)
    perm = torch.randperm(n, generator=g)
    c1 = c0[perm]
    plain = ExactOTCoupler()(x0, x1, torch.Generator())
    pairing = ExactOTCoupler(colour_weight=1.0)(x0, x1, torch.Generator(), (c0, c1))
    partner = [int(torch.where((x1 == row).all(dim=(1, 2, 3)))[0]) for row in pairing.x1]
    assert partner == torch.argsort(perm).tolist()  # A row i with the B row of its colour
    assert not torch.equal(plain.x1, pairing.x1)
    built = build_coupler(FlowConfig(colour_weight=1.0))
    assert isinstance(built, ExactOTCoupler) and built.colour_weight == 1.0


def test_minibatch_pairs_hand_the_coupler_the_drawn_rows_colours_and_draw_as_without():
    from translate.coupling import MinibatchPairs
    from translate.latent_sampling import LatentSampler
    from translate.prefetch import Generators

    latents_a, latents_b = torch.randn(40, 4, 2, 2), torch.randn(30, 4, 2, 2)
    colours = torch.arange(40.0)[:, None], torch.arange(30.0)[:, None] + 100

    class Spy(ExactOTCoupler):
        def __call__(self, x0, x1, generator, colours=None):
            self.seen = (x0, x1, colours)
            return super().__call__(x0, x1, generator, colours)

    samplers = LatentSampler(latents_a), LatentSampler(latents_b)
    gens = lambda: Generators.create(0, 0, torch.device("cpu"))  # noqa: E731
    plain = MinibatchPairs(*samplers, ExactOTCoupler())(8, gens())
    spy = Spy(colour_weight=0.0)
    same = MinibatchPairs(*samplers, spy, colours)(8, gens())
    assert torch.equal(plain.x0, same.x0) and torch.equal(plain.x1, same.x1)
    x0, x1, (f0, f1) = spy.seen
    rows_a = [int(torch.where((latents_a == r).all(dim=(1, 2, 3)))[0]) for r in x0]
    rows_b = [int(torch.where((latents_b == r).all(dim=(1, 2, 3)))[0]) for r in x1]
    assert f0[:, 0].tolist() == rows_a and f1[:, 0].tolist() == [r + 100 for r in rows_b]


def test_global_coupler_gathers_the_colours_with_the_latents():
    x0, x1 = _batches(n=8)
    c0, c1 = torch.eye(8), torch.eye(8).flip(0)
    seen = []

    def gather(t):
        seen.append(t)
        return torch.cat([t, t])

    coupler = GlobalCoupler(ExactOTCoupler(colour_weight=1.0), gather, 0, 2)
    pairing = coupler(x0, x1, torch.Generator(), (c0, c1))
    assert len(pairing.x0) == 8
    assert any(torch.equal(t, c0) for t in seen) and any(torch.equal(t, c1) for t in seen)


def test_a_colour_weighted_dataset_plan_pairs_by_colour_where_the_latents_cannot_tell():
    from translate.coupling import DatasetPlan

    n = 12
    g = torch.Generator().manual_seed(1)
    latents_a = torch.zeros(n, 2, 2, 2)
    latents_b = torch.randn(n, 2, 2, 2, generator=g) * 1e-3 + 5.0
    perm = torch.randperm(n, generator=g)
    colours = torch.eye(n), torch.eye(n)[perm]
    plan = DatasetPlan.solve(latents_a, latents_b, None, colours, 1.0)
    partners = plan.partners(torch.arange(n), torch.Generator())
    assert partners.tolist() == torch.argsort(perm).tolist()
