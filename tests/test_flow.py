import pytest
import torch

from translate.flow import (
    ProbabilityPath,
    SourceCondition,
    build_path,
    cfm_loss,
    cfm_step,
    high_pass,
    identity_loss,
    identity_rows,
    predicted_endpoints,
    rollout_states,
    rollout_steps,
    sample_time,
)
from translate.solvers import integrate


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    t = torch.rand(5, generator=g)
    eps = torch.randn(5, 4, 3, 3, generator=g)
    return x0, x1, t, eps


@pytest.mark.parametrize("objective", ["i-cfm", "ot-cfm"])
def test_constant_sigma_closed_form(batch, objective):
    x0, x1, t, eps = batch
    s = build_path(objective, 0.3).sample(x0, x1, t, eps)
    tb = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(s.x_t, (1 - tb) * x0 + tb * x1 + 0.3 * eps)
    torch.testing.assert_close(s.u_t, x1 - x0)


def test_no_noise_endpoints(batch):
    x0, x1, _, _ = batch
    path = ProbabilityPath()
    torch.testing.assert_close(path.sample(x0, x1, torch.zeros(5)).x_t, x0)  # t=0 is domain A
    torch.testing.assert_close(path.sample(x0, x1, torch.ones(5)).x_t, x1)  # t=1 is domain B


def test_sb_cfm_closed_form(batch):
    x0, x1, t, eps = batch
    sigma = 0.5
    s = build_path("sb-cfm", sigma).sample(x0, x1, t, eps)
    tb = t.view(-1, 1, 1, 1)
    sigma_t = sigma * torch.sqrt(tb * (1 - tb))
    mu = (1 - tb) * x0 + tb * x1
    torch.testing.assert_close(s.x_t, mu + sigma_t * eps)
    # torchcfm's form: u = (1-2t)/(2t(1-t)) * (x_t - mu) + (x1 - x0)
    torch.testing.assert_close(s.u_t, (1 - 2 * tb) / (2 * tb * (1 - tb)) * (s.x_t - mu) + x1 - x0)


def test_noise_required_when_sigma_positive(batch):
    x0, x1, t, _ = batch
    with pytest.raises(ValueError, match="noise"):
        ProbabilityPath(0.1).sample(x0, x1, t)


def test_loss_is_mse():
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    assert cfm_loss(a, b).item() == pytest.approx(1.0)


def test_high_frequency_weight_adds_the_high_pass_error_only():
    g = torch.Generator().manual_seed(0)
    v, u = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    assert torch.equal(cfm_loss(v, u, 0.0), torch.nn.functional.mse_loss(v, u))
    blurred = torch.nn.functional.avg_pool2d(v - u, 3, 1, 1, count_include_pad=False)
    expected = (v - u).pow(2).mean() + 2.0 * (v - u - blurred).pow(2).mean()
    torch.testing.assert_close(cfm_loss(v, u, 2.0), expected)
    # an error that is constant over each map has no high-pass part: the weight adds nothing
    offset = torch.randn(3, 4, 1, 1, generator=g).expand(3, 4, 8, 8)
    assert high_pass(offset).abs().max() < 1e-6
    torch.testing.assert_close(cfm_loss(u + offset, u, 5.0), cfm_loss(u + offset, u, 0.0))
    # a checkerboard error is almost all high-pass: the weight scales it up
    board = (torch.arange(8)[:, None] + torch.arange(8)[None]).remainder(2).float() - 0.5
    assert cfm_loss(u + board, u, 1.0) > 1.7 * cfm_loss(u + board, u, 0.0)


def test_predicted_endpoints_are_exact_on_the_straight_path(batch):
    x0, x1, t, _ = batch
    s = ProbabilityPath().sample(x0, x1, t)
    z_a, z_b = predicted_endpoints(s.x_t, s.t, s.u_t)
    torch.testing.assert_close(z_a, x0)
    torch.testing.assert_close(z_b, x1)


def test_uniform_time_is_the_plain_draw():
    a = sample_time("uniform", 7, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, torch.rand(7, generator=torch.Generator().manual_seed(1)))


def test_time_samplings_weight_the_middle_or_the_ends():
    g = torch.Generator().manual_seed(0)
    ends = {}
    for name in ("uniform", "logit-normal", "u-shape"):
        t = sample_time(name, 20000, g)
        assert t.min() >= 0 and t.max() <= 1
        ends[name] = ((t < 0.1) | (t > 0.9)).float().mean().item()
    assert ends["uniform"] == pytest.approx(0.2, abs=0.01)
    assert ends["logit-normal"] < 0.05  # sigmoid(N(0,1)) rarely leaves [0.1, 0.9]
    assert ends["u-shape"] == pytest.approx(0.41, abs=0.01)  # arcsine law: 4/pi asin(sqrt(.1))
    with pytest.raises(ValueError, match="unknown time sampling"):
        sample_time("cosine", 3, g)


def test_cfm_step_regresses_the_field_onto_the_target(batch):
    x0, x1, _, _ = batch

    def exact(x, t):  # the true velocity of straight paths with these pairs
        return x1 - x0

    step = cfm_step(exact, x0, x1, ProbabilityPath(), torch.Generator().manual_seed(0))
    assert step.loss.item() == 0.0
    torch.testing.assert_close(step.velocity, x1 - x0)


def test_rollout_states_are_the_euler_solvers_own_states():
    def field(x, t):  # nonlinear in x and t; t is a scalar (solver) or per sample (rollout)
        t = torch.as_tensor(t).reshape(-1, 1, 1, 1)
        return torch.sin(3 * x) * (1 + t) - x * t

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    k = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    t_start = torch.tensor([0.0] * 4 + [1.0] * 4)
    evaluated = []

    def on_rows(x, t, rows):  # the field, recording which rows each step evaluates
        evaluated.append(rows.tolist())
        return field(x, t)

    x_k, t_k = rollout_states(on_rows, torch.cat([a, b]), t_start, 4, k)
    # step j evaluates only the rows still moving (k > j), not the whole batch
    assert evaluated == [[1, 2, 3, 4, 5, 6], [2, 3, 4, 5], [3, 4]]
    forward = integrate(field, a, 0.0, 1.0, steps=4, return_trajectory=True).trajectory
    backward = integrate(field, b, 1.0, 0.0, steps=4, return_trajectory=True).trajectory
    torch.testing.assert_close(t_k, torch.tensor([0, 0.25, 0.5, 0.75, 0.25, 0.5, 0.75, 1.0]))
    for i in range(4):
        torch.testing.assert_close(x_k[i], forward[k[i], i])
        torch.testing.assert_close(x_k[4 + i], backward[k[4 + i], i])
    torch.testing.assert_close(x_k[0], a[0])  # k = 0: the source itself
    with pytest.raises(ValueError, match="k must lie in"):
        rollout_states(on_rows, a, torch.zeros(4), 4, torch.tensor([0, 1, 2, 4]))


def test_rollout_states_condition_each_row_on_its_own_source():
    # a field whose velocity depends on each row's own condition: evaluating a subset of the
    # rows must hand the field the conditions of exactly those rows
    g = torch.Generator().manual_seed(1)
    sources = torch.randn(6, 2, 3, 3, generator=g)
    kept = sources.clone()
    condition = SourceCondition.of(sources, torch.tensor([False] * 3 + [True] * 3))

    def conditioned(x, t, c):
        return c.source - x + c.from_b.float().reshape(-1, 1, 1, 1)

    k = torch.tensor([3, 0, 2, 1, 3, 2])
    t_start = torch.tensor([0.0] * 3 + [1.0] * 3)
    x_k, _ = rollout_states(
        lambda x, t, rows: conditioned(x, t, condition.select(rows)), sources, t_start, 4, k
    )
    for i in range(6):  # the row alone, with the whole batch's field, step by step
        x, sign = sources[i : i + 1], 1 - 2 * t_start[i]
        for _ in range(int(k[i])):
            x = x + sign / 4 * conditioned(x, None, condition.select(torch.tensor([i])))
        torch.testing.assert_close(x_k[i : i + 1], x)
    assert torch.equal(sources, kept)  # the caller's sources are not moved in place


def test_rollout_steps_pick_the_named_euler_states():
    g = torch.Generator().manual_seed(0)
    uniform = rollout_steps("uniform", 4, 64, g)  # the draws of the recipe before the option
    same = torch.Generator().manual_seed(0)
    assert torch.equal(uniform, torch.randint(0, 4, (64,), generator=same))
    assert rollout_steps("last", 4, 5, g).tolist() == [3] * 5
    ends = rollout_steps("ends", 4, 64, g)
    assert set(ends.tolist()) == {0, 3}
    assert rollout_steps("ends", 1, 3, g).tolist() == [0, 0, 0]  # one step: both ends are k = 0
    with pytest.raises(ValueError, match="unknown rollout states"):
        rollout_steps("first", 4, 2, g)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        rollout_steps("last", 0, 2, g)


def test_the_prediction_from_the_last_rollout_state_is_the_k_step_translation():
    def field(x, t):
        t = torch.as_tensor(t).reshape(-1, 1, 1, 1)
        return torch.cos(2 * x) * (1 - t) + x * t

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    t_start = torch.tensor([0.0] * 3 + [1.0] * 3)
    k = rollout_steps("last", 4, 6, g)
    x_k, t_k = rollout_states(lambda x, t, rows: field(x, t), torch.cat([a, b]), t_start, 4, k)
    z_a, z_b = predicted_endpoints(x_k, t_k, field(x_k, t_k))
    torch.testing.assert_close(z_b[:3], integrate(field, a, 0.0, 1.0, steps=4).x)
    torch.testing.assert_close(z_a[3:], integrate(field, b, 1.0, 0.0, steps=4).x)


def test_noised_sources_noise_each_rows_source_end_and_condition_on_it():
    from translate.flow import SourceCondition, noised_sources

    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 4, 2, 2, generator=g), torch.randn(64, 4, 2, 2, generator=g)
    n0, n1, condition = noised_sources(x0, x1, 0.5, torch.Generator().manual_seed(1))
    from_b = condition.from_b
    assert 16 < int(from_b.sum()) < 48  # each row's role is drawn with probability 1/2
    a2b = ~from_b
    torch.testing.assert_close(n1[a2b], x1[a2b])  # A -> B rows: the target end is clean,
    torch.testing.assert_close(condition.source[a2b], x0[a2b])  # the condition the clean A,
    torch.testing.assert_close(n0[from_b], x0[from_b])  # and the reverse for B -> A rows
    torch.testing.assert_close(condition.source[from_b], x1[from_b])
    noise = torch.cat([(n0 - x0)[a2b], (n1 - x1)[from_b]])  # 0.5 * eps on each source end
    assert 0.4 < noise.std().item() < 0.6
    # the same generator state gives the same draw; sigma_s = 0 only assigns the roles
    again = noised_sources(x0, x1, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], n0) and torch.equal(again[2].from_b, from_b)
    clean = noised_sources(x0, x1, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(clean[0], x0) and torch.equal(clean[1], x1)
    both = SourceCondition.of(x0[:3], True).cat(SourceCondition.of(x1[:2], False))
    assert both.from_b.tolist() == [True, True, True, False, False]
    assert torch.equal(both.source, torch.cat([x0[:3], x1[:2]]))


def test_identity_rows_put_each_domain_at_the_other_domains_end(batch):
    x0, x1, _, _ = batch
    x, t = identity_rows(x0[:2], x1[:3])
    assert torch.equal(x, torch.cat([x1[:3], x0[:2]]))  # B first, at t = 0 (where A -> B starts)
    assert t.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0] and t.dtype == torch.float32
    assert identity_loss(torch.zeros_like(x)) == 0
    assert identity_loss(x.bfloat16()).dtype == torch.float32
    assert identity_loss(x) == pytest.approx(x.pow(2).mean().item())
