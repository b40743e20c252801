import pytest
import torch

from translate.adversarial import (
    Adversary,
    Discriminators,
    Endpoints,
    PixelPatchDiscriminator,
    critics,
    discriminator_loss,
    generator_loss,
    high_pass,
    ramp,
)


def _sets(n=32, shift=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = Endpoints(torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 4, 8, 8, generator=g))
    fake = Endpoints(real.a + shift, real.b - shift)
    return real, fake


def test_patch_logits_shape():
    disc = Discriminators(4, width=8)
    assert disc("a", torch.zeros(3, 4, 16, 16)).shape == (3, 1, 4, 4)
    assert disc("b", torch.zeros(3, 4, 8, 8)).shape == (3, 1, 2, 2)


def test_pixel_space_judges_decoded_images_and_passes_the_gradient_to_the_latents():
    disc = Discriminators(4, width=8, space="pixels")  # the latent channels no longer matter
    assert disc("a", torch.zeros(3, 3, 64, 64)).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown discriminator space"):
        Discriminators(4, space="rgb")
    upsample = torch.nn.Upsample(scale_factor=4)  # stands in for a frozen VAE decoder

    def decode(z):
        return torch.tanh(upsample(z[:, :3]))

    adversary = Adversary(4, 8, 1e-3, 0.05, "cpu", seed=0, decode=decode, space="pixels")
    real, fake = _sets()
    fake = Endpoints(fake.a.requires_grad_(True), fake.b)
    seen = adversary.view(fake)
    assert seen["a"].shape == (32, 3, 32, 32)
    adversary.generator_loss(seen).backward()
    assert fake.a.grad is not None and fake.a.grad[:, 3].abs().sum() == 0  # only what decodes
    assert fake.a.grad[:, :3].abs().sum() > 0
    with torch.no_grad():
        real_seen = adversary.view(real)
    loss = adversary.update(real_seen, {k: v.detach() for k, v in seen.items()})
    assert torch.isfinite(loss.total) and loss.r1 > 0
    latent = Adversary(4, 8, 1e-3, 0.05, "cpu", seed=0)
    seen = latent.view(fake)
    assert seen["a"] is fake.a and seen["b"] is fake.b  # latent space: the endpoints as they are
    with pytest.raises(ValueError, match="needs a decoder"):
        Adversary(4, 8, 1e-3, 0.05, "cpu", seed=0, space="pixels-a")


def test_a_high_pass_pixel_discriminator_sees_detail_not_the_fill_colour():
    g = torch.Generator().manual_seed(0)
    flat = torch.ones(4, 3, 32, 32) * torch.rand(4, 3, 1, 1, generator=g) * 2 - 1  # 4 colours
    assert high_pass(flat, 2.0).abs().max() < 1e-6  # a flat area of any colour is 0
    edge = flat.clone()
    edge[..., 16:] = -1  # a black right half: an edge
    assert high_pass(edge, 2.0)[..., 12:20].abs().amax() > 0.1
    assert high_pass(edge, 2.0)[..., :4].abs().amax() < 1e-6  # far from the edge: nothing
    with pytest.raises(ValueError, match="sigma > 0"):
        high_pass(flat, 0.0)
    torch.manual_seed(0)
    disc = PixelPatchDiscriminator(3, 8, highpass=2.0)
    logits = disc(flat)
    assert torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-5)  # colour-blind
    assert not torch.allclose(disc(edge), logits, atol=1e-3)  # but not blind to lines
    torch.manual_seed(0)
    whole = PixelPatchDiscriminator(3, 8)  # highpass 0: the same weights, the whole image
    assert torch.equal(whole(edge), whole.net(edge))
    assert not torch.allclose(whole(flat), whole(flat)[:1].expand(4, -1, -1, -1), atol=1e-3)
    # through Adversary: the pixel domain's discriminator filters, the latent one has no filter
    adversary = Adversary(
        4, 8, 1e-3, 0.0, "cpu", seed=0, decode=torch.tanh, space="pixels-a", pixel_highpass=1.5
    )
    assert adversary.disc.nets["a"].highpass == 1.5
    assert not hasattr(adversary.disc.nets["b"], "highpass")


@pytest.mark.parametrize("space", ["pixels-a", "pixels-b"])
def test_one_domain_in_pixels_decodes_that_domain_only(space):
    pixel_domain = space[-1]
    latent_domain = "b" if pixel_domain == "a" else "a"
    upsample = torch.nn.Upsample(scale_factor=4)
    decoded = []

    def decode(z):
        decoded.append(len(z))
        return torch.tanh(upsample(z[:, :3]))

    gammas = {pixel_domain: 0.0, latent_domain: 0.05}
    adversary = Adversary(4, 8, 1e-3, gammas, "cpu", seed=0, decode=decode, space=space)
    nets = adversary.disc.nets
    assert nets[pixel_domain].net[0].in_channels == 3  # RGB
    assert nets[latent_domain].net[0].in_channels == 4  # latent channels
    real, fake = _sets()
    fake = Endpoints(fake.a.requires_grad_(True), fake.b.requires_grad_(True))
    seen = adversary.view(fake)
    assert decoded == [32]  # one decode: the pixel domain's
    assert seen[pixel_domain].shape == (32, 3, 32, 32)
    assert seen[latent_domain] is getattr(fake, latent_domain)
    adversary.generator_loss(seen).backward()
    for d in "ab":  # both discriminators send a gradient to their latents
        assert getattr(fake, d).grad.abs().sum() > 0
    real_seen = {
        d: decode(getattr(real, d)) if d == pixel_domain else getattr(real, d) for d in "ab"
    }
    before = {k: v.clone() for k, v in adversary.disc.state_dict().items()}
    loss = adversary.update(real_seen, {k: v.detach() for k, v in seen.items()})
    # R1 is taken on the latent domain only (the pixel domain's weight is 0)
    disc = Discriminators(4, width=8, space=space)
    disc.load_state_dict(before)
    x = real_seen[latent_domain].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(latent_domain, x).sum(), x)
    assert loss.r1.item() == pytest.approx(grad.pow(2).flatten(1).sum(1).mean().item(), rel=1e-5)


def test_critics_name_each_discriminator_with_its_domain_and_what_it_sees():
    assert critics("latents") == {"a": ("a", "latents"), "b": ("b", "latents")}
    assert critics("pixels") == {"a": ("a", "pixels"), "b": ("b", "pixels")}
    assert critics("pixels-b") == {"a": ("a", "latents"), "b": ("b", "pixels")}
    assert critics("latents+pixels-a") == {
        "a": ("a", "latents"),
        "b": ("b", "latents"),
        "a_pixels": ("a", "pixels"),
    }
    assert critics("latents+pixels") == {
        "a": ("a", "latents"),
        "b": ("b", "latents"),
        "a_pixels": ("a", "pixels"),
        "b_pixels": ("b", "pixels"),
    }
    with pytest.raises(ValueError, match="unknown discriminator space"):
        critics("latents+rgb")


def test_a_domain_judged_on_latents_and_images_gets_both_terms():
    """latents+pixels-a: the latent discriminators start as the latent space's do, A's
    endpoints are decoded once for the extra one, the generator term is the sum of the three
    discriminators' terms, and each reaches A's latents; R1 is taken per discriminator."""
    upsample = torch.nn.Upsample(scale_factor=4)
    decoded = []

    def decode(z):
        decoded.append(len(z))
        return torch.tanh(upsample(z[:, :3]))

    gammas = {"a": 0.05, "b": 0.05, "a_pixels": 0.0}
    both = Adversary(4, 8, 1e-3, gammas, "cpu", seed=0, decode=decode, space="latents+pixels-a")
    latent = Adversary(4, 8, 1e-3, 0.05, "cpu", seed=0)
    nets = both.disc.nets
    assert list(nets) == ["a", "b", "a_pixels"] and nets["a_pixels"].net[0].in_channels == 3
    for d in "ab":  # the latent discriminators: the same initial weights as without the extra one
        for p, q in zip(nets[d].parameters(), latent.disc.nets[d].parameters(), strict=True):
            assert torch.equal(p, q)
    real, fake = _sets()
    fake = Endpoints(fake.a.requires_grad_(True), fake.b)
    seen = both.view(fake)
    assert decoded == [32] and seen["a"] is fake.a and seen["b"] is fake.b
    assert seen["a_pixels"].shape == (32, 3, 32, 32)
    terms = {
        name: torch.nn.functional.softplus(-both.disc(name, x)).mean() for name, x in seen.items()
    }
    assert both.generator_loss(seen).item() == pytest.approx(sum(terms.values()).item(), rel=1e-6)
    for name in ("a", "a_pixels"):  # each of A's discriminators sends A's latents a gradient
        (grad,) = torch.autograd.grad(terms[name], fake.a, retain_graph=True)
        assert grad.abs().sum() > 0
    real_seen = {"a": real.a, "b": real.b, "a_pixels": decode(real.a)}
    before = {k: v.clone() for k, v in both.disc.state_dict().items()}
    loss = both.update(real_seen, {k: v.detach() for k, v in seen.items()})
    norms = []  # R1 on the latent discriminators only (the image one's weight is 0)
    disc = Discriminators(4, width=8, space="latents+pixels-a")
    disc.load_state_dict(before)
    for d in "ab":
        x = real_seen[d].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(disc(d, x).sum(), x)
        norms.append(grad.pow(2).flatten(1).sum(1).mean().item())
    assert loss.r1.item() == pytest.approx(sum(norms), rel=1e-5)
    with pytest.raises(KeyError):  # a discriminator without an R1 weight
        Adversary(4, 8, 1e-3, {"a": 0.05, "b": 0.05}, "cpu", 0, decode, space="latents+pixels-a")


def test_per_domain_r1_weights_penalise_each_domain_by_its_own():
    disc = Discriminators(4, width=8)
    real, fake = _sets()
    plain = discriminator_loss(disc, real, fake, r1_gamma=0.0)
    norms = {}
    for d in ("a", "b"):
        norms[d] = discriminator_loss(disc, real, fake, r1_gamma={d: 1.0, "ab".replace(d, ""): 0.0})
    both = discriminator_loss(disc, real, fake, r1_gamma=1.0)
    assert both.r1.item() == pytest.approx(norms["a"].r1.item() + norms["b"].r1.item(), rel=1e-5)
    mixed = discriminator_loss(disc, real, fake, r1_gamma={"a": 2.0, "b": 0.5})
    expected = plain.logistic.item() + norms["a"].r1.item() + 0.25 * norms["b"].r1.item()
    assert mixed.total.item() == pytest.approx(expected, rel=1e-5)
    # a float gives the same loss as the same weight for each domain
    same = discriminator_loss(disc, real, fake, r1_gamma={"a": 1.0, "b": 1.0})
    assert same.total.item() == both.total.item()


def test_r1_penalty_is_the_squared_input_gradient():
    disc = Discriminators(4, width=8)
    real, fake = _sets()
    plain = discriminator_loss(disc, real, fake, r1_gamma=0.0)
    assert plain.r1.item() == 0.0 and plain.total.item() == pytest.approx(plain.logistic.item())
    penalised = discriminator_loss(disc, real, fake, r1_gamma=2.0)
    expected = 0.0
    for d in ("a", "b"):
        x = getattr(real, d).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(disc(d, x).sum(), x)
        expected += grad.pow(2).flatten(1).sum(1).mean().item()
    assert penalised.r1.item() == pytest.approx(expected, rel=1e-5)
    assert penalised.total.item() == pytest.approx(plain.logistic.item() + expected, rel=1e-5)


def test_discriminators_learn_to_tell_real_from_shifted_latents():
    real, fake = _sets()
    adversary = Adversary(4, 8, lr=2e-3, r1_gamma=0.01, device="cpu", seed=0)
    first = adversary.update(real, fake).logistic.item()
    for _ in range(30):
        last = adversary.update(real, fake).logistic.item()
    assert last < 0.5 * first
    # and the generator loss of the fakes grows as the discriminators improve
    assert generator_loss(adversary.disc, fake).item() > generator_loss(adversary.disc, real).item()


def test_generator_loss_reaches_the_fake_latents_only():
    adversary = Adversary(4, 8, lr=1e-3, r1_gamma=0.0, device="cpu", seed=0)
    real, fake = _sets()
    fake_b = fake.b.clone().requires_grad_(True)
    adversary.generator_loss(Endpoints(fake.a, fake_b)).backward()
    assert fake_b.grad is not None and fake_b.grad.abs().sum() > 0
    before = [p.detach().clone() for p in adversary.disc.parameters()]
    adversary.update(real, fake)  # clears the generator's gradients before its own step
    assert any(
        not torch.equal(b, p) for b, p in zip(before, adversary.disc.parameters(), strict=True)
    )


def test_save_and_load_round_trip(tmp_path):
    real, fake = _sets()
    one = Adversary(4, 8, lr=1e-3, r1_gamma=0.1, device="cpu", seed=0)
    one.update(real, fake)
    one.save(tmp_path / "adv")
    two = Adversary(4, 8, lr=1e-3, r1_gamma=0.1, device="cpu", seed=1)
    two.load(tmp_path / "adv")
    one.update(real, fake)
    two.update(real, fake)
    for p, q in zip(one.disc.parameters(), two.disc.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_same_seed_same_discriminators():
    a = Adversary(4, 8, lr=1e-3, r1_gamma=0.0, device="cpu", seed=3)
    b = Adversary(4, 8, lr=1e-3, r1_gamma=0.0, device="cpu", seed=3)
    state = torch.get_rng_state()
    Adversary(4, 8, lr=1e-3, r1_gamma=0.0, device="cpu", seed=4)
    assert torch.equal(state, torch.get_rng_state())  # the global stream is left alone
    for p, q in zip(a.disc.parameters(), b.disc.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("step", "share"), [(1, 0.0), (10, 0.0), (11, 0.25), (14, 1.0), (100, 1.0)]
)
def test_ramp(step, share):
    assert ramp(step, start=10, length=4) == pytest.approx(share)
    assert ramp(step, start=0, length=0) == 1.0


def test_distance_weighting_counts_each_prediction_by_its_jump():
    from translate.adversarial import endpoint_weights

    t = torch.tensor([0.0, 0.25, 1.0])
    assert endpoint_weights(t, "uniform") is None
    w = endpoint_weights(t, "distance")
    assert w.b.tolist() == [1.0, 0.75, 0.0] and w.a.tolist() == [0.0, 0.25, 1.0]
    with pytest.raises(ValueError, match="unknown endpoint weighting"):
        endpoint_weights(t, "other")
    # a fake with weight 0 does not count: changing it leaves the loss unchanged
    disc = Discriminators(4, width=8)
    real, fake = _sets(n=3)
    other = Endpoints(fake.a.clone(), fake.b.clone())
    other.b[2] += 5.0  # predicted at t = 1: weight 0 for z_B
    other.a[0] += 5.0  # predicted at t = 0: weight 0 for z_A
    assert generator_loss(disc, fake, w).item() == pytest.approx(
        generator_loss(disc, other, w).item()
    )
    one = discriminator_loss(disc, real, fake, 0.0, w).total.item()
    assert one == pytest.approx(discriminator_loss(disc, real, other, 0.0, w).total.item())


def test_diff_augment_shifts_and_cuts_out_differentiably_and_none_is_the_identity():
    from translate.adversarial import diff_augment

    x = torch.randn(64, 2, 16, 16, requires_grad=True)
    assert diff_augment(x, "none") is x
    gen = torch.Generator().manual_seed(0)
    moved = diff_augment(x, "translation", gen)
    shifts = set()
    for i in range(len(x)):  # each sample is its own image shifted by at most 2 cells
        padded = torch.nn.functional.pad(x[i].detach(), (2, 2, 2, 2))
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(moved[i].detach(), padded[:, 2 - dy : 18 - dy, 2 - dx : 18 - dx])
        ]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 10  # drawn per sample
    cut = diff_augment(torch.ones(64, 2, 16, 16), "cutout", gen)
    zeroed = (cut == 0).all(dim=1).flatten(1).sum(1)  # cells zeroed per sample, all channels
    assert ((cut == 0) | (cut == 1)).all() and (zeroed > 0).all() and (zeroed <= 64).all()
    assert (zeroed == 64).any() and (zeroed < 64).any()  # 8 x 8, or hanging over an edge
    both = diff_augment(x, "translation-cutout", gen)
    both.sum().backward()  # the gradient reaches the input: 1 where a value was kept
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and x.grad.sum() > 0
    with pytest.raises(ValueError, match="unknown augmentation"):
        diff_augment(x, "rotation", gen)


def test_augmented_discriminators_see_augmented_inputs_in_both_losses():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.mean(dim=1, keepdim=True)

    real = Endpoints(torch.ones(4, 4, 8, 8), torch.ones(4, 4, 8, 8))
    fake = Endpoints(torch.ones(4, 4, 8, 8), torch.ones(4, 4, 8, 8))
    for augment, zeros in (("none", False), ("cutout", True)):
        adversary = Adversary(4, 8, 1e-3, 0.0, "cpu", 0, augment=augment)
        adversary.disc.nets = torch.nn.ModuleDict({"a": Spy(), "b": Spy()})
        seen.clear()
        gen = torch.Generator().manual_seed(0)
        adversary.generator_loss(fake, generator=gen)
        assert len(seen) == 2 and all(bool((s == 0).any()) == zeros for s in seen)
        seen.clear()
        discriminator_loss(adversary.disc, real, fake, 0.0, None, augment, gen)
        assert len(seen) == 4 and all(bool((s == 0).any()) == zeros for s in seen)
