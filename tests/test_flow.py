import pytest
import torch

from translate.flow import ProbabilityPath, build_path, cfm_loss


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
