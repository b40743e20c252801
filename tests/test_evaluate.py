import json

import pytest
import torch

from translate import metrics
from translate.cli import eval_main
from translate.codec import LatentCodec


@pytest.fixture(scope="module")
def features(tiny_vae):
    return metrics.LatentFeatures(LatentCodec.from_pretrained(tiny_vae), 16)


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1


def test_fd_of_a_set_against_itself_is_zero(features):
    x, y = _images(30, 0), _images(30, 1) * 0.3
    same = metrics.realism(x, x, features)
    assert same["fd"] == pytest.approx(0.0, abs=1e-4)
    assert abs(same["kid"]) < 1e-3
    assert metrics.realism(x, y, features)["fd"] > 10 * max(same["fd"], 1e-6)


def test_pixel_metrics_on_known_inputs():
    x = _images(4, 0)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(4))
    assert torch.all(metrics.l2(x, x) == 0) and torch.all(metrics.l1(x, x) == 0)
    black, white = -torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert metrics.psnr(black, white).item() == pytest.approx(0.0)  # MSE 1 on [0, 1]
    assert metrics.l1(black, white).item() == 1.0


def test_retrieval_is_perfect_when_translations_are_the_truth():
    gallery = torch.randn(20, 8)
    truth = torch.randperm(20)[:10]
    assert metrics.retrieval(gallery[truth], gallery, truth) == {"top1": 1.0, "top5": 1.0}
    shuffled = metrics.retrieval(gallery[truth.roll(1)], gallery, truth)
    assert shuffled["top1"] == 0.0


def _blur(images, sigma):
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(images, kernel_size=9, sigma=sigma)


def _drawn(n=12, size=32):
    """Sharp-edged shapes on white, as in the tests' data, in [-1, 1]."""
    import numpy as np
    from helpers import draw_shape

    from translate.images import to_tensor

    rng = np.random.default_rng(0)
    return to_tensor([draw_shape("AB"[i % 2], size, rng) for i in range(n)])


def test_sharpness_is_one_for_the_real_set_and_below_for_a_blurred_one():
    real = _drawn()
    assert metrics.sharpness_ratio(real, real) == pytest.approx(1.0)
    ratios = [metrics.sharpness_ratio(_blur(real, s), real) for s in (0.7, 1.5, 3.0)]
    assert 1.0 > ratios[0] > ratios[1] > ratios[2] > 0
    assert metrics.high_frequency_share(torch.zeros(2, 3, 8, 8)).tolist() == [0.0, 0.0]
    noisy = real + 0.3 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    assert metrics.sharpness_ratio(noisy.clamp(-1, 1), real) > 1.0
    with pytest.raises(ValueError, match="cutoff"):
        metrics.high_frequency_share(real, cutoff=1.5)


def test_memorisation_ratio_is_low_for_copies_of_training_images():
    images = _drawn(24)
    train, held_out = images[:16], images[16:]
    assert metrics.memorisation_ratio(held_out, held_out, train) == pytest.approx(1.0)
    copies = train[:8] + 0.01
    assert metrics.memorisation_ratio(copies, held_out, train) < 0.1
    distance = metrics.nearest_distance(train[:3], train)
    assert torch.allclose(distance, torch.zeros(3), atol=1e-3)


def test_straightness_is_zero_for_a_straight_path_only():
    from translate.solvers import integrate

    x = torch.randn(3, 2)
    for field, straight in ((lambda x, t: torch.ones_like(x), True), (lambda x, t: -x, False)):
        sol = integrate(field, x, 0.0, 1.0, 8, "euler", return_trajectory=True)
        value = metrics.straightness(field, sol.trajectory, sol.times)
        assert (value < 1e-10) == straight


def _outlined(n: int, outline: bool, generator: torch.Generator) -> torch.Tensor:
    """n random-coloured discs on white, (n, 3, 32, 32) in [-1, 1], with or without a dark rim."""
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    images = torch.ones(n, 3, 32, 32)
    for i in range(n):
        cy, cx = torch.randint(10, 22, (2,), generator=generator).tolist()
        r = int(torch.randint(5, 9, (1,), generator=generator))
        d = ((yy - cy) ** 2 + (xx - cx) ** 2).float().sqrt()
        images[i][:, d <= r] = torch.rand(3, 1, generator=generator) * 2 - 1
        if outline:
            images[i][:, (d > r - 1.5) & (d <= r)] = -1.0
    return images


def test_classifier_separates_pixel_domains_and_round_trips(tmp_path):
    """Outlined vs plain discs of random colours and places: no colour or mean tells them apart,
    the outline does; with the default training, held-out accuracy well above chance."""
    g = torch.Generator().manual_seed(0)
    train_a, train_b = _outlined(480, True, g), _outlined(320, False, g)
    test_a, test_b = _outlined(40, True, g), _outlined(40, False, g)
    clf = metrics.DomainClassifier.fit(train_a, train_b, seed=0)
    assert clf.accuracy(test_a, test_b) > 0.9
    # success: a translation into B counts when it looks like B, into A when it looks like A
    assert clf.success(test_b, "a2b").float().mean() > 0.8
    assert clf.success(test_a, "b2a").float().mean() > 0.8
    assert clf.success(test_a, "a2b").float().mean() < 0.2
    with pytest.raises(ValueError, match="direction"):
        clf.success(test_a, "ab")
    path = str(tmp_path / "c.safetensors")
    clf.save(path, "key1")
    assert metrics.DomainClassifier.load(path, "other") is None
    loaded = metrics.DomainClassifier.load(path, "key1")
    assert torch.equal(loaded.prob_b(test_a), clf.prob_b(test_a))
    again = metrics.DomainClassifier.fit(train_a, train_b, seed=0)
    assert torch.equal(again.prob_b(test_a), clf.prob_b(test_a))  # deterministic for a seed
    (tmp_path / "c.safetensors").write_bytes(b"damaged")
    assert metrics.DomainClassifier.load(path, "key1") is None  # retrained, not an error
    with pytest.raises(ValueError, match="each domain"):
        metrics.DomainClassifier.fit(train_a, train_b[:0])
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.DomainClassifier.fit(train_a, torch.zeros(2, 3, 40, 40))


def test_classifier_input_is_resized_to_at_most_64_px():
    small = torch.rand(3, 3, 32, 48) * 2 - 1
    assert torch.equal(metrics._classifier_input(small), small)
    big = torch.rand(300, 3, 128, 96) * 4 - 2  # more than one chunk, out of range
    out = metrics._classifier_input(big)
    assert out.shape == (300, 3, 64, 64) and out.min() >= -1 and out.max() <= 1
    flat = torch.full((2, 3, 128, 128), 0.25)
    assert torch.allclose(metrics._classifier_input(flat), torch.full((2, 3, 64, 64), 0.25))


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, tiny_vae):
    from helpers import make_folders, tiny_translator

    root = tmp_path_factory.mktemp("eval")
    data = make_folders(root / "data", n_train=10, n_test=6)
    (root / "data.yaml").write_text(f"data:\n  source: folders\n  root: {data}\n  resolution: 16\n")
    paths = []
    for name, scale, noise in (("run-a", 1.0, None), ("run-b", 0.5, 0.5)):  # b: source-noised
        tr = tiny_translator(tiny_vae, "circles", "squares", source_noise=noise)
        with torch.no_grad():
            for p in tr.unet.parameters():
                p.mul_(scale)
        tr.save_pretrained(root / name / "checkpoint-final")
        paths.append(root / name / "checkpoint-final")
    return root, paths


def test_full_command_writes_every_file_and_one_table(two_checkpoints, capsys):
    root, (first, second) = two_checkpoints
    out = root / "report"
    argv = [str(first), "--compare", str(second), "--data-config", str(root / "data.yaml")]
    argv += ["--steps", "1,2", "--method", "euler", "rk4", "--out", str(out)]
    assert eval_main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "report.md", "classifier.safetensors"} <= names
    assert {"plot-a2b.png", "plot-b2a.png"} <= names
    assert "grid-run-a-a2b-euler.png" in names and "grid-run-b-b2a-rk4.png" in names

    result = json.loads((out / "metrics.json").read_text())
    assert result["realism"] == "latent-FD/latent-KID" and result["labels"] == ["run-a", "run-b"]
    rows = result["rows"]
    # per direction: 2 baselines + 2 ceilings + 2 checkpoints x 2 solvers x 2 step counts
    assert len(rows) == 2 * (4 + 2 * 2 * 2)
    assert {"VAE reconstruction", "latent mix"} <= {r["model"] for r in rows}
    assert all("straightness" not in r["scores"] for r in rows if r["nfe"] == 1)
    assert all("straightness" in r["scores"] for r in rows if r["nfe"] > 1)
    identity = next(r for r in rows if r["model"] == "identity")
    assert identity["scores"]["ssim"] == pytest.approx(1.0)
    assert identity["scores"]["l2"] == 0.0
    assert identity["scores"]["psnr"] is None  # infinite: strict JSON has no Infinity
    rk4 = next(r for r in rows if r["method"] == "rk4" and r["steps"] == 2)
    assert rk4["nfe"] == 8  # 4 evaluations per rk4 step
    for r in rows:
        expected = {"fd", "kid", "ssim", "success", "gt_ssim", "top1", "top5", "sharpness"}
        assert expected | {"memorisation"} <= set(r["scores"])
        assert r["scores"]["kid_std"] is None  # 6 images: every KID subset is the whole set

    report = (out / "report.md").read_text()
    assert report.count("## ") == 2  # one table per direction, every model in it
    assert "run-a" in report and "run-b" in report and "latent-FD" in report
    assert "not FID" in report
    assert "tone kept" not in report  # no emoji names: no skin-tone columns, no note on them
    fingerprints = result["vae_fingerprints"]  # both checkpoints carry copies of one VAE
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert report.count(f"VAE `{fingerprints[0]}`") == 2  # on the realism and top-k lines
    assert "different VAEs" not in report
    captured = capsys.readouterr()
    assert "wrote" in captured.out
    recognised = result["classifier_recognised"]
    # exact shares of the 6 test images per domain (float32's 5/6 would be 0.83333331)
    assert all(recognised[k] in {i / 6 for i in range(7)} for k in ("a", "b"))
    assert result["classifier_train_images"] == {"a": 10, "b": 10}
    assert f"circles {recognised['a']:.1%}, squares {recognised['b']:.1%}" in report
    weak = min(recognised.values()) < 0.9  # 10 training images per domain: often weak
    assert ("unreliable" in report) == weak == ("warning: domain success" in captured.err)


def test_the_judge_of_a_disjoint_run_learns_from_every_training_image(two_checkpoints):
    """data.disjoint keeps half of each domain's training items for the run; the domain
    classifier still learns from all of them, while the nearest-neighbour baseline and the
    memorisation check keep to the run's own training targets."""
    from safetensors import safe_open

    root, (first, _) = two_checkpoints
    data = root / "data"
    (root / "disjoint.yaml").write_text(
        f"data:\n  source: folders\n  root: {data}\n  resolution: 16\n  disjoint: true\n"
    )
    out = root / "report-disjoint"
    argv = [str(first), "--data-config", str(root / "disjoint.yaml"), "--steps", "1"]
    assert eval_main([*argv, "--method", "euler", "--direction", "a2b", "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    run = result["training_images"]
    assert result["classifier_train_images"] == {"a": 10, "b": 10}
    assert run["a"] + run["b"] == 10 and 0 < run["a"] < 10  # each item in one domain only
    report = (out / "report.md").read_text()
    assert f"where the run trained on {run['a']} and {run['b']}" in report
    assert result["classifier_whole_split"] is True
    # the judge is the one an evaluation on the whole data gets: the same weights, bit for bit
    whole = root / "report-whole"
    argv = [str(first), "--data-config", str(root / "data.yaml"), "--steps", "1"]
    assert eval_main([*argv, "--method", "euler", "--direction", "a2b", "--out", str(whole)]) == 0
    judges = []
    for folder in (whole, out):
        with safe_open(str(folder / "classifier.safetensors"), "pt") as f:
            judges.append((f.metadata(), {k: f.get_tensor(k) for k in f.keys()}))  # noqa: SIM118
    assert judges[0][0] == judges[1][0]  # the same cache key: the same images
    assert judges[0][1].keys() == judges[1][1].keys()
    assert all(torch.equal(judges[0][1][k], judges[1][1][k]) for k in judges[0][1])
    whole_meta = json.loads((whole / "metrics.json").read_text())
    assert whole_meta["training_images"] == {"a": 10, "b": 10}
    assert whole_meta["classifier_whole_split"] is False
    assert "where the run trained on" not in (whole / "report.md").read_text()


def test_an_unreliable_classifier_is_said_so_in_one_line():
    from translate.report import classifier_warning

    meta = {
        "domains": ["photos", "paintings"],
        "classifier_recognised": {"a": 0.99, "b": 0.15},
        "classifier_train_images": {"a": 1600, "b": 3},
    }
    warning = classifier_warning(meta)
    assert warning.startswith("domain success is unreliable here")
    assert "only 15.0% of the real paintings images from 3 training images" in warning
    assert "\n" not in warning
    meta["classifier_recognised"] = {"a": 0.99, "b": 0.9}  # the bar itself is trusted
    assert classifier_warning(meta) is None
    assert classifier_warning({"domains": ["a", "b"]}) is None  # metrics written before


def test_checkpoints_with_different_vaes_are_named_in_one_line():
    from translate.report import vae_note

    meta = {"labels": ["run-a", "run-b"], "realism": "latent-FD/latent-KID"}
    assert vae_note({**meta, "vae_fingerprints": ["0123456789ab"] * 2}) is None
    assert vae_note(meta) is None  # metrics written before fingerprints were recorded
    note = vae_note({**meta, "vae_fingerprints": ["0123456789ab", "ba9876543210"]})
    assert note.startswith("the checkpoints have different VAEs")
    assert "`run-a` `0123456789ab`, `run-b` `ba9876543210`" in note and "\n" not in note
    assert "latent-FD, latent-KID and top-k" in note
    inception = {**meta, "realism": "FID/KID (Inception-v3)"}
    note = vae_note({**inception, "vae_fingerprints": ["0123456789ab", "ba9876543210"]})
    assert "latent-FD" not in note and ": top-k of every row" in note  # Inception judges FD


def test_a_comparison_across_vaes_warns_and_names_them(two_checkpoints, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    root, (first, _) = two_checkpoints
    other = shutil.copytree(first, tmp_path / "run-c" / "checkpoint-final")
    weights = other / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-2  # the same run on a (slightly) different VAE
    save_file(tensors, str(weights))
    out = tmp_path / "report"
    argv = [str(first), "--compare", str(other), "--data-config", str(root / "data.yaml")]
    assert eval_main([*argv, "--steps", "1", "--direction", "a2b", "--out", str(out)]) == 0
    fingerprints = json.loads((out / "metrics.json").read_text())["vae_fingerprints"]
    assert fingerprints[0] != fingerprints[1]
    err = capsys.readouterr().err
    assert "warning: the checkpoints have different VAEs" in err
    assert f"`run-c` `{fingerprints[1]}`" in (out / "report.md").read_text()


def test_same_command_same_numbers(two_checkpoints):
    """Fixed seeds; the second run takes the classifier from the cache."""
    root, (first, _) = two_checkpoints
    out = root / "again"
    argv = [str(first), "--data-config", str(root / "data.yaml"), "--steps", "1"]
    argv += ["--direction", "a2b", "--out", str(out)]

    def scores():
        rows = json.loads((out / "metrics.json").read_text())["rows"]
        return [{k: v for k, v in r["scores"].items() if k != "images_per_s"} for r in rows]

    assert eval_main(argv) == 0
    first_scores = scores()
    before = (out / "classifier.safetensors").stat().st_mtime_ns
    assert eval_main(argv) == 0
    assert (out / "classifier.safetensors").stat().st_mtime_ns == before
    assert scores() == first_scores


def test_bad_arguments_are_one_line_errors(two_checkpoints, tmp_path, capsys):
    _, (first, _) = two_checkpoints
    assert eval_main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert eval_main([str(first), "--steps", "1,x", "--out", str(tmp_path / "o")]) == 2
    assert "--steps" in capsys.readouterr().err
    assert eval_main([str(first), "--out", str(tmp_path / "o")]) == 2  # no stored data config
    assert "--data-config" in capsys.readouterr().err


def test_guidance_is_measured_as_asked_and_said_in_the_report(two_checkpoints, tiny_vae):
    from helpers import tiny_translator

    root, (plain, _) = two_checkpoints
    guided = root / "run-guided" / "checkpoint-final"
    tiny_translator(tiny_vae, "circles", "squares", guidance=2.0).save_pretrained(guided)
    common = ["--data-config", str(root / "data.yaml"), "--steps", "2", "--direction", "a2b"]

    def evaluated(name, *extra):
        out = root / name
        assert eval_main([str(guided), *common, "--out", str(out), *extra]) == 0
        result = json.loads((out / "metrics.json").read_text())
        (row,) = [r for r in result["rows"] if r["model"] == "run-guided"]
        return result["guidance"], row["scores"]["l2"], (out / "report.md").read_text()

    own, own_l2, report = evaluated("guided-own")
    asked, asked_l2, _ = evaluated("guided-2", "--guidance", "2")
    alone, alone_l2, alone_report = evaluated("guided-1", "--guidance", "1")
    assert own == asked == [{"a2b": 2.0}] and own_l2 == asked_l2
    assert alone == [{"a2b": 1.0}] and alone_l2 != own_l2
    assert "autoguidance weight: `run-guided` A→B 2;" in report
    assert "autoguidance" not in alone_report
    argv = [str(plain), *common, "--out", str(root / "refused"), "--guidance", "2"]
    assert eval_main(argv) == 2  # a checkpoint without a guide: a one-line error


def test_colour_shift_on_known_colours():
    white = torch.ones(1, 3, 8, 8)
    figure = white.clone()
    figure[:, :, 2:6, 2:6] = torch.tensor([0.6, 0.2, -0.2]).view(1, 3, 1, 1)  # a skin-like tone
    same = metrics.color_shift(figure, figure)
    assert same["delta_e"].item() == 0 and same["lightness"].item() == 0
    darker = figure.clone()
    darker[:, :, 2:6, 2:6] -= 0.4
    shift = metrics.color_shift(darker, figure)
    assert shift["lightness"].item() < -10 and shift["delta_e"].item() > 0
    lab = metrics.to_lab(torch.stack([white[0], -white[0]]))
    assert lab[0, 0].mean().item() == pytest.approx(100.0) and lab[1, 0].max().item() == 0.0
    assert lab[:, 1:].abs().max().item() <= 1  # white and black carry no colour


def test_one_image_per_domain_reports_realism_as_not_computed(tmp_path, tiny_vae):
    from helpers import make_folders, tiny_translator

    data = make_folders(tmp_path / "data", n_train=6, n_test=1)
    (tmp_path / "data.yaml").write_text(
        f"data:\n  source: folders\n  root: {data}\n  resolution: 16\n"
    )
    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    argv = [str(tmp_path / "ckpt"), "--data-config", str(tmp_path / "data.yaml")]
    assert eval_main([*argv, "--steps", "1", "--out", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["rows"]
    assert all(r["scores"]["fd"] is None and r["scores"]["ssim"] is not None for r in rows)
    assert "not computed" in (tmp_path / "out" / "report.md").read_text()
