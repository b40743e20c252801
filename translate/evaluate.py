"""``translate-eval``: score checkpoints on a split, with baselines, into one table.

For each direction, solver and step count it measures realism against the real target images
(FID/KID on Inception features when the weights are given, else latent-FD/latent-KID),
faithfulness to the source (SSIM, PSNR, L2), domain success (a small CNN on pixels trained on
the real training images), paired ground truth when test files share names (SSIM, PSNR, L1,
retrieval top-1/top-5), sharpness (high-frequency power relative to the real targets), memorisation
(distance to the nearest training target relative to real held-out targets), path straightness,
NFE and images/s. Baselines: the identity and the nearest target training image; ceilings: the
real targets through the VAE, and decoded midpoints of two real targets' latents. Files are
written by ``translate.report``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path

import torch
from tqdm.auto import tqdm

from translate import metrics, skin_tone
from translate.config import DataConfig, config_from_dict
from translate.data import open_source
from translate.errors import TranslateError
from translate.images import load_rgb, resize_center_crop, to_tensor
from translate.pipeline import DIRECTIONS, TranslationOptions, Translator

TRAIN_CAP = 4000  # training images per domain for the classifier and the NN baseline
# below this share of a domain's real split images recognised, the classifier's domain success
# is flagged as unreliable (a domain with few training images, or two it cannot tell apart)
TRUSTED_RECOGNITION = 0.9


@dataclass
class EvalOptions:
    """What to evaluate and where to write it."""

    out: Path = Path("eval/default")
    split: str = "test"
    directions: tuple[str, ...] = DIRECTIONS
    steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    methods: tuple[str, ...] = ("euler",)
    limit: int | None = None  # source images per direction (evenly spaced); None: all
    inception_weights: str | None = None  # a local Inception-v3 weights file: real FID/KID
    batch_size: int = 64
    seed: int = 0
    grid_rows: int = 8
    device: str = "auto"
    guidance: float | None = None  # autoguidance weight of every model; None: each one's own

    def __post_init__(self) -> None:
        if not (self.directions and self.methods and self.steps):
            raise TranslateError("directions, methods and steps each need at least one value")
        try:
            for direction, method, steps in product(self.directions, self.methods, self.steps):
                TranslationOptions(direction, steps, method, guidance=self.guidance)
        except ValueError as err:
            raise TranslateError(str(err)) from None


@dataclass
class ImageSet:
    """One domain's images of one split, at the model resolution."""

    names: list[str]  # file names (used to find paired ground truth)
    pixels: torch.Tensor  # (n, 3, R, R) in [-1, 1]


@dataclass
class Row:
    """One line of the table: a model (or baseline) x direction x solver x steps."""

    model: str
    direction: str
    method: str = ""
    steps: int = 0
    nfe: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    """What an evaluation produced, before it is written out."""

    rows: list[Row]
    meta: dict
    grids: dict[str, list[list]]  # "model/direction" -> rows of PIL images (source .. truth)
    grid_columns: dict[str, list[str]]


def load_images(files: Sequence[Path], resolution: int, crop: int | None) -> ImageSet:
    """Read and resize files (unreadable ones are skipped)."""
    names, images = [], []
    for f in files:
        try:
            images.append(resize_center_crop(load_rgb(f), resolution, crop))
        except (OSError, ValueError):
            continue
        names.append(f.name)
    if not images:
        raise TranslateError("no readable images to evaluate")
    return ImageSet(names, to_tensor(images))


def _evenly(files: list[Path], limit: int | None) -> list[Path]:
    if limit is None or limit >= len(files):
        return files
    index = torch.linspace(0, len(files) - 1, limit).round().long().unique().tolist()
    return [files[i] for i in index]


def label_of(path: Path) -> str:
    """A short model name: the run folder for ``runs/X/checkpoint-*``, else the folder name."""
    path = Path(path)
    return path.parent.name if path.name.startswith("checkpoint") else path.name


def evaluate(
    checkpoints: Sequence[Path],
    opts: EvalOptions,
    data: DataConfig | None = None,
) -> Outcome:
    """Evaluate ``checkpoints`` (the first sets data, resolution and feature space)."""
    torch.manual_seed(opts.seed)
    translators = _load_translators(checkpoints, opts.device)
    main = translators[0]
    for path, tr in zip(checkpoints, translators, strict=True):
        try:
            tr.check_guidance(opts.guidance)
        except TranslateError as err:
            raise TranslateError(f"{path}: {err}") from None
    guidance = [  # per checkpoint, the weight of each evaluated direction
        {
            d: tr.default_guidance(d) if opts.guidance is None else opts.guidance
            for d in opts.directions
        }
        for tr in translators
    ]
    if data is None:
        data = config_from_dict(main.info.config).data if main.info.config else None
        if data is None:
            raise TranslateError("the checkpoint stores no data config; pass --data-config")
    source = open_source(data)
    res, crop = main.resolution, source.crop
    test_a, test_b = (
        load_images(_evenly(files, opts.limit), res, crop) for files in source.split(opts.split)
    )
    train_a, train_b = (
        load_images(_evenly(files, TRAIN_CAP), res, crop) for files in source.split("train")
    )
    # the domain judge learns from every training image of the source: a run that keeps only
    # part of them (data.disjoint) must not weaken the judge that scores it
    judge_a, judge_b = train_a, train_b
    if data.disjoint:
        judge_a, judge_b = (
            load_images(_evenly(files, TRAIN_CAP), res, crop)
            for files in open_source(replace(data, disjoint=False)).split("train")
        )
    features = metrics.LatentFeatures(main.codec, res, opts.batch_size)
    # realism is measured on Inception features when the weights are given, else on latents
    inception = None
    if opts.inception_weights:
        inception = metrics.InceptionFeatures(opts.inception_weights)

    def feats(pixels: torch.Tensor) -> torch.Tensor:  # (n, 3, R, R) in [-1, 1] -> (n, d)
        return features((pixels + 1) / 2)

    train_feats = {"a": feats(train_a.pixels), "b": feats(train_b.pixels)}  # (n, d) each
    classifier, accuracy, recognised = _classifier(opts, res, judge_a, judge_b, test_a, test_b)
    labels = [label_of(c) for c in checkpoints]
    outcome = Outcome([], {}, {}, {})
    for direction in opts.directions:
        src, tgt = (test_a, test_b) if direction == "a2b" else (test_b, test_a)
        tgt_train = train_b if direction == "a2b" else train_a
        scorer = _Scorer(opts.seed, src, tgt, feats, inception, classifier, direction)
        scorer.train_targets = tgt_train.pixels
        tgt_train_feats = train_feats["b" if direction == "a2b" else "a"]
        outcome.rows += _baseline_rows(scorer, direction, main, tgt_train_feats, feats, opts)
        examples = scorer.example_index(opts.grid_rows)
        for label, tr in zip(labels, translators, strict=True):
            for method in opts.methods:
                _model_rows(outcome, scorer, label, tr, direction, method, examples, opts)
    outcome.meta.update(
        checkpoints=[str(c) for c in checkpoints],
        labels=labels,
        guidance=guidance,
        guidance_until=[{d: tr.guidance_until(d) for d in opts.directions} for tr in translators],
        domains=list(main.domains),
        resolution=res,
        split=opts.split,
        images={"a": len(test_a.names), "b": len(test_b.names)},
        realism="FID/KID (Inception-v3)" if opts.inception_weights else "latent-FD/latent-KID",
        classifier_accuracy=accuracy,
        classifier_recognised=recognised,
        classifier_train_images={"a": len(judge_a.names), "b": len(judge_b.names)},
        training_images={"a": len(train_a.names), "b": len(train_b.names)},
        classifier_whole_split=data.disjoint,  # the judge learned from more than the run
        seed=opts.seed,
        vae_fingerprints=[tr.codec.fingerprint() for tr in translators],
    )
    return outcome


def _load_translators(checkpoints: Sequence[Path], device: str) -> list[Translator]:
    """The checkpoints' translators; TranslateError unless they share one resolution."""
    translators = [Translator.from_pretrained(c, device=device) for c in checkpoints]
    main = translators[0]
    for path, tr in zip(checkpoints, translators, strict=True):
        if tr.resolution != main.resolution:
            raise TranslateError(
                f"{path} works at {tr.resolution} px, {checkpoints[0]} at {main.resolution} px; "
                "compare checkpoints of one resolution"
            )
    return translators


def _baseline_rows(scorer, direction, main, tgt_train_feats, feats, opts) -> list[Row]:
    """The identity, the nearest training target and the codec's ceilings, scored."""
    src, tgt, tgt_train = scorer.src.pixels, scorer.tgt.pixels, scorer.train_targets
    nearest = torch.cdist(feats(src), tgt_train_feats).argmin(dim=1)
    rows = [
        Row("identity", direction, scores=scorer(src)),
        Row("nearest neighbour", direction, scores=scorer(tgt_train[nearest])),
    ]
    for name, images in _ceilings(main, tgt, len(src), opts):
        rows.append(Row(name, direction, scores=scorer(images)))
    return rows


def _model_rows(
    outcome: Outcome,
    scorer: _Scorer,
    label: str,
    tr: Translator,
    direction: str,
    method: str,
    examples: torch.Tensor,
    opts: EvalOptions,
) -> None:
    """One model's rows (one per step count) and its grid, for a direction and a solver."""
    src, tgt = scorer.src, scorer.tgt
    grid_cols = [src.pixels[examples]]
    for steps in tqdm(opts.steps, desc=f"{label} {direction} {method}", unit="run"):
        out, nfe, seconds, straight = _translate(tr, src.pixels, direction, method, steps, opts)
        scores = scorer(out)
        scores["images_per_s"] = len(out) / seconds
        if nfe > 1:  # one Euler step is straight by construction
            scores["straightness"] = straight
        outcome.rows.append(Row(label, direction, method, steps, nfe, scores))
        grid_cols.append(out[examples])
    if scorer.truth is not None:
        grid_cols.append(tgt.pixels[scorer.truth[examples]])
    key = f"{label}/{direction}/{method}"
    outcome.grids[key] = grid_cols
    outcome.grid_columns[key] = (
        ["source"]
        + [f"{s} steps" for s in opts.steps]
        + (["truth"] if scorer.truth is not None else [])
    )


class _Scorer:
    """Scores translations of one direction's sources against that direction's targets.

    ``feats`` maps images (n, 3, R, R) in [-1, 1] to latent features (n, d); ``inception``,
    when given, maps [0, 1] images to the features realism is measured on instead.
    """

    def __init__(self, seed, src: ImageSet, tgt: ImageSet, feats, inception, classifier, direction):
        self.seed, self.src, self.tgt, self.feats = seed, src, tgt, feats
        self.inception, self.classifier, self.direction = inception, classifier, direction
        by_name = {n: i for i, n in enumerate(tgt.names)}
        pairs = [by_name.get(n, -1) for n in src.names]
        self.paired = torch.tensor([p >= 0 for p in pairs])
        self.skin_toned = torch.tensor([skin_tone.has_tone(n) for n in src.names])
        # each set's colour of each skin tone, read from its evaluated images (None: too few
        # toned emoji, or names without modifiers: the skin-tone scores are left out)
        self.palettes = (
            skin_tone.palette(src.pixels, src.names),
            skin_tone.palette(tgt.pixels, tgt.names),
        )
        self.truth = torch.tensor(pairs) if self.paired.any() else None
        self.train_targets: torch.Tensor | None = None  # (m, 3, R, R): the memorisation check
        self.target_feats = feats(tgt.pixels)  # encoded once, for every row
        self.target_realism = self._realism_feats(tgt.pixels, self.target_feats)

    def _realism_feats(self, pixels: torch.Tensor, latent_feats: torch.Tensor) -> torch.Tensor:
        if self.inception is None:
            return latent_feats
        return self.inception((pixels + 1) / 2)

    def example_index(self, count: int) -> torch.Tensor:
        pool = torch.nonzero(self.paired).flatten() if self.truth is not None else None
        pool = pool if pool is not None and len(pool) else torch.arange(len(self.src.names))
        pick = torch.linspace(0, len(pool) - 1, min(count, len(pool))).round().long().unique()
        return pool[pick]

    def __call__(self, out: torch.Tensor) -> dict[str, float]:
        out = out.float().clamp(-1, 1)
        out_feats = self.feats(out)
        if min(len(out), len(self.target_realism)) >= 2:
            scores = metrics.realism_from_features(
                self.target_realism, self._realism_feats(out, out_feats), self.seed
            )
        else:  # a distance between distributions needs two images a side: not computed
            scores = {"fd": math.nan, "kid": math.nan, "kid_std": math.nan}
        scores.update(
            ssim=metrics.ssim(out, self.src.pixels).mean().item(),
            psnr=metrics.psnr(out, self.src.pixels).mean().item(),
            l2=metrics.l2(out, self.src.pixels).mean().item(),
        )
        scores["sharpness"] = metrics.sharpness_ratio(out, self.tgt.pixels)
        if self.train_targets is not None:
            scores["memorisation"] = metrics.memorisation_ratio(
                out, self.tgt.pixels, self.train_targets
            )
        scores.update(self._tone_scores(out))
        success = self.classifier.success(out, self.direction)
        scores["success"] = success.float().mean().item()
        if self.truth is not None:
            keep = self.paired
            truth = self.truth[keep]
            gt = self.tgt.pixels[truth]
            scores.update(
                gt_ssim=metrics.ssim(out[keep], gt).mean().item(),
                gt_psnr=metrics.psnr(out[keep], gt).mean().item(),
                gt_l1=metrics.l1(out[keep], gt).mean().item(),
                **metrics.retrieval(out_feats[keep], self.target_feats, truth),
            )
            colour = metrics.color_shift(out[keep], gt)
            scores.update(gt_delta_e=colour["delta_e"].mean().item())
            skin = self.skin_toned[keep]
            if skin.any():  # emoji with a skin-tone modifier, reported apart
                scores.update(
                    skin_delta_e=colour["delta_e"][skin].mean().item(),
                    skin_lightness=colour["lightness"][skin].mean().item(),
                )
        return scores

    def _tone_scores(self, out: torch.Tensor) -> dict[str, float]:
        """``tone_kept`` (share), ``tone_delta_e`` and ``tone_lightness`` (means over the
        emoji whose translated skin was found) of ``skin_tone.tone_scores``; {} if unmeasured."""
        if any(p is None for p in self.palettes):
            return {}
        tones = skin_tone.tone_scores(out, self.src.pixels, self.src.names, *self.palettes)
        if not len(tones.index):
            return {}
        return {
            "tone_kept": tones.kept.float().mean().item(),
            "tone_delta_e": tones.delta_e.nanmean().item(),
            "tone_lightness": tones.lightness.nanmean().item(),
        }


def _ceilings(tr: Translator, targets: torch.Tensor, count: int, opts: EvalOptions):
    """What the codec allows: real targets through the VAE, and decoded latent midpoints.

    ``VAE reconstruction`` is decode(encode(y)) of the real targets; ``latent mix`` is
    decode((z_i + z_j) / 2) of two random real targets, the look of an average of partners.
    Each set has ``count`` images (the sources' number), targets repeated or cut to fit.
    """
    index = torch.arange(count) % len(targets)
    g = torch.Generator().manual_seed(opts.seed)
    other = torch.randint(len(targets), (count,), generator=g)
    recon, mixed = [], []
    with torch.no_grad():
        for i, j in zip(index.split(opts.batch_size), other.split(opts.batch_size), strict=True):
            z_i = tr.codec.encode(targets[i].to(tr.device))
            z_j = tr.codec.encode(targets[j].to(tr.device))
            recon.append(tr.codec.decode(z_i).cpu())
            mixed.append(tr.codec.decode((z_i + z_j) / 2).cpu())
    return [("VAE reconstruction", torch.cat(recon)), ("latent mix", torch.cat(mixed))]


def _translate(tr: Translator, pixels, direction, method, steps, opts):
    """Pixels (n, 3, R, R) in batches -> (images, NFE per image, seconds, straightness)."""
    outs, nfes, straight, seconds = [], [], None, 0.0
    for chunk in pixels.split(opts.batch_size):
        start = time.perf_counter()
        latents = tr.codec.encode(chunk.to(tr.device))
        solution = tr.translate_latents(
            latents,
            direction,
            steps,
            method,
            return_trajectory=True,
            seed=opts.seed,
            guidance=opts.guidance,
        )
        out = tr.codec.decode(solution.x).cpu()
        seconds += time.perf_counter() - start
        outs.append(out)
        nfes.append(solution.nfe)
        if straight is None:  # on the first batch only: it costs as many NFE again
            field = tr.velocity_field(latents, direction, opts.guidance)
            straight = metrics.straightness(field, solution.trajectory, solution.times)
    return torch.cat(outs), sum(nfes) / len(nfes), seconds, straight


def _classifier(opts, resolution, train_a, train_b, test_a, test_b):
    """The domain classifier on pixels, its accuracy on the evaluated split's real images and,
    per domain ("a", "b"), the share of them it assigns to their own domain; cached in
    ``opts.out`` under a key of the training images' names and pixels, the resolution and the
    seed (no VAE: it judges pixels), so that other data never reuses it."""
    digest = hashlib.sha256(
        json.dumps([resolution, train_a.names, train_b.names, opts.seed]).encode()
    )
    for pixels in (train_a.pixels, train_b.pixels):
        for chunk in pixels.split(256):
            digest.update(chunk.contiguous().numpy().tobytes())
    key = digest.hexdigest()[:16]
    path = Path(opts.out) / "classifier.safetensors"
    classifier = metrics.DomainClassifier.load(str(path), key)
    if classifier is None:
        classifier = metrics.DomainClassifier.fit(train_a.pixels, train_b.pixels, seed=opts.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        classifier.save(str(path), key)
    # counts of real images assigned to their own domain, and exact shares of them (so that
    # 9 of 10 is 0.9, not float32's 0.8999...)
    right = {
        "a": int(classifier.success(test_a.pixels, "b2a").sum()),
        "b": int(classifier.success(test_b.pixels, "a2b").sum()),
    }
    recognised = {"a": right["a"] / len(test_a.pixels), "b": right["b"] / len(test_b.pixels)}
    accuracy = (right["a"] + right["b"]) / (len(test_a.pixels) + len(test_b.pixels))
    return classifier, accuracy, recognised
