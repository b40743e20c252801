"""Typed configuration: dataclasses validated by OmegaConf, from YAML plus key=value overrides.

The dataclass defaults are the embedded default run (OpenMoji -> Twemoji on a CPU); every
shipped YAML in ``configs/`` only changes values, never adds keys.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from translate.errors import ConfigError, first_line
from translate.flow import ROLLOUT_STATES, TIME_SAMPLINGS
from translate.solvers import METHODS

SOURCES = ("emoji", "folders", "celeba", "glyphs")
WEIGHTINGS = ("uniform", "distance")  # of predicted endpoints: translate.adversarial
# what the discriminators judge (translate.adversarial.critics): both latents, both decoded
# images, or only domain A's (B's) on decoded images; latents+pixels(-a, -b): both on latents,
# and a second discriminator on decoded images for both domains (for A, for B)
SPACES = (
    "latents",
    "pixels",
    "pixels-a",
    "pixels-b",
    "latents+pixels",
    "latents+pixels-a",
    "latents+pixels-b",
)
# DiffAugment policies of the discriminators' inputs: translate.adversarial.diff_augment
AUGMENTATIONS = ("none", "translation", "cutout", "translation-cutout")
COLOUR_MATCHES = ("layout", "composition")  # the colour term's comparisons: translate.content
OBJECTIVES = ("ot-cfm", "i-cfm", "sb-cfm")
SCOPES = ("local", "global", "dataset", "paired")
MAX_COLOUR_BINS = 16  # flow.colour_bins: 16**3 = 4096 histogram entries per training image
LR_SCHEDULES = ("constant", "cosine", "linear")
LATENT_STORAGES = ("auto", "memory", "mmap")
PRECISIONS = ("launcher", "auto", "no", "bf16", "fp16")
STAGE1_PRECISIONS = ("auto", "no", "bf16")
REFLOW_PAIRS = ("both", "a2b", "b2a")  # pair sets of translate.reflow


@dataclass
class DataConfig:
    source: str = "emoji"  # emoji | folders | celeba | glyphs
    root: str | None = None  # folders: holds trainA/trainB/testA/testB; celeba: the CelebA root
    attribute: str = "Male"  # celeba: domain A has the attribute at -1, domain B at +1
    celeba_crop: int = (
        140  # celeba: center square (px) of the 178x218 aligned face, before resizing
    )
    resolution: int = 64  # training resolution in pixels (square)
    flip: bool = False  # also encode horizontally flipped training images (augmentation)
    # training items that no domain shares: A keeps one half of the file names, B the other
    # (the test split is unchanged); on the emoji default no emoji is then drawn in both styles
    disjoint: bool = False
    domain_a: str | None = None  # display name of domain A; null uses the source's own name
    domain_b: str | None = None  # display name of domain B
    cache_dir: str = ".cache/translate"  # built data sets, trained VAEs and encoded latents
    num_workers: int = 0  # image-decoding worker processes while encoding (0: in the main process)

    def __post_init__(self) -> None:
        _choice("data.source", self.source, SOURCES)
        if self.source in ("folders", "celeba") and not self.root:
            raise ConfigError(f"data.root is required when data.source={self.source}")
        _positive("data.resolution", self.resolution)


@dataclass
class OwnVAEConfig:
    """Stage 1: the project's own AutoencoderKL, trained when ``vae.pretrained`` is null."""

    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # one per level
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8
    steps: int = 1000  # optimizer steps
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate, cosine-decayed to 5% after warm-up
    warmup_steps: int = 100
    kl_weight: float = 1e-6  # small: the latent space only has to be smooth, not Gaussian
    # focal frequency loss (Jiang et al., ICCV 2021) added to the L1 term; 0: L1 only
    frequency_weight: float = 0.0
    checkpoint_every: int = 250  # stage-1 resume points (steps)
    seed: int = 0
    # autocast: "auto" is bf16 on a CPU with native bf16 arithmetic (1.6x faster here, the same
    # test PSNR; docs/PERFORMANCE.md §9), float32 elsewhere; "no": float32; "bf16"
    mixed_precision: str = "auto"

    def __post_init__(self) -> None:
        _choice("vae.own.mixed_precision", self.mixed_precision, STAGE1_PRECISIONS)
        if not 0 <= self.frequency_weight < math.inf:  # NaN fails too
            raise ConfigError(f"vae.own.frequency_weight must be >= 0, got {self.frequency_weight}")


@dataclass
class VAEConfig:
    pretrained: str | None = None  # hub id or local folder; null trains the project's own VAE
    subfolder: str | None = None  # e.g. "vae" inside a full pipeline repository
    sample_posterior: bool = False  # encode with a posterior sample instead of the mean
    encode_batch_size: int = 64
    own: OwnVAEConfig = field(default_factory=OwnVAEConfig)


@dataclass
class FlowConfig:
    objective: str = "ot-cfm"  # ot-cfm: exact OT pairs | i-cfm: independent pairs | sb-cfm
    sigma: float = 0.0  # path noise: constant for i-cfm/ot-cfm, sigma*sqrt(t(1-t)) for sb-cfm
    # local: pair each process's batch; global: one plan over all processes' batches;
    # dataset (exact plan only): one exact plan over all training latents, solved once at the start;
    # paired: each A file with the B file of the same name (paired data: a baseline, not unpaired)
    scope: str = "local"
    cost_resolution: int | None = None  # OT cost on latents average-pooled to this size
    # weight of the colour term in the plan's cost: the squared distance of the two images' soft
    # CIELAB colour histograms (of the training images, colour_bins centres per axis, cached
    # with the latents; translate.colour), scaled to colour_weight times the latent cost on
    # average (the logged pair_cost is then that sum's); 0: latents only. It weighs in the OT
    # pairs only: a reflow round's pairs come from the field
    colour_weight: float = 0.0
    colour_bins: int = 12
    # sb-cfm: entropic regularisation, as a fraction of the mean cost; 0 pairs by the exact plan
    # (the limit of a vanishing regulariser: exact OT pairs with Brownian-bridge noise)
    sinkhorn_reg: float = 0.05
    # unbalanced OT pairs (UOT-FM, Eyring et al. 2024): the marginal relaxation tau in (0, 1],
    # 1 = balanced (exact plan for ot-cfm); below 1 each step's pairs are drawn from the
    # unbalanced entropic plan with regulariser unbalanced_reg (a fraction of the mean cost)
    unbalanced_tau: float = 1.0
    unbalanced_reg: float = 0.01
    # training times: uniform | logit-normal (the middle) | u-shape (both ends; translate.flow)
    time_sampling: str = "uniform"
    # extra weight on the high-pass (3 x 3) part of the regression error; same minimiser
    # (translate.flow.cfm_loss), 0 = the plain mean squared error
    high_frequency_weight: float = 0.0
    # the clean source latent as extra UNet input channels, its direction as a class label
    source_condition: bool = False
    # noise sigma_s * eps on each row's source end (normalised latents, std about 1): a seed
    # picks one translation at inference; needs source_condition (translate.flow.noised_sources)
    source_noise: float = 0.0
    # weight of the identity term: the velocity of each domain's real latents at the other
    # domain's end of the path (B at t=0, A at t=1) regressed onto 0, CycleGAN's identity loss
    # (translate.flow.identity_rows); on the first identity_batch latents of each domain's
    # batch (all of them where the batch is smaller)
    identity_weight: float = 0.0
    identity_batch: int = 16

    def __post_init__(self) -> None:
        _choice("flow.objective", self.objective, OBJECTIVES)
        _choice("flow.scope", self.scope, SCOPES)
        _choice("flow.time_sampling", self.time_sampling, TIME_SAMPLINGS)
        if self.scope == "dataset" and not self.exact_plan:
            raise ConfigError(
                "flow.scope=dataset needs the exact plan: flow.objective=ot-cfm, "
                "or sb-cfm with flow.sinkhorn_reg=0, and flow.unbalanced_tau=1"
            )
        if self.sigma < 0:
            raise ConfigError(f"flow.sigma must be >= 0, got {self.sigma}")
        if self.sinkhorn_reg < 0:
            raise ConfigError(f"flow.sinkhorn_reg must be >= 0, got {self.sinkhorn_reg}")
        if self.scope == "paired" and self.unbalanced_tau < 1:
            raise ConfigError(
                "flow.scope=paired takes the given pairs: flow.unbalanced_tau must be 1"
            )
        if not 0 < self.unbalanced_tau <= 1:
            raise ConfigError(f"flow.unbalanced_tau must lie in (0, 1], got {self.unbalanced_tau}")
        if not self.unbalanced_reg > 0:
            raise ConfigError(f"flow.unbalanced_reg must be > 0, got {self.unbalanced_reg}")
        if self.unbalanced_tau < 1 and self.objective == "i-cfm":
            raise ConfigError(
                "flow.unbalanced_tau < 1 relaxes an OT plan: use flow.objective=ot-cfm or sb-cfm"
            )
        if not 0 <= self.high_frequency_weight < float("inf"):
            raise ConfigError(
                f"flow.high_frequency_weight must be >= 0, got {self.high_frequency_weight}"
            )
        if not 0 <= self.source_noise < float("inf"):
            raise ConfigError(f"flow.source_noise must be >= 0, got {self.source_noise}")
        if not 0 <= self.identity_weight < float("inf"):
            raise ConfigError(f"flow.identity_weight must be >= 0, got {self.identity_weight}")
        if not 0 <= self.colour_weight < float("inf"):
            raise ConfigError(f"flow.colour_weight must be >= 0, got {self.colour_weight}")
        if not 2 <= self.colour_bins <= MAX_COLOUR_BINS:
            raise ConfigError(
                f"flow.colour_bins must lie in [2, {MAX_COLOUR_BINS}], got {self.colour_bins}"
            )
        if self.colour_weight > 0 and (self.objective == "i-cfm" or self.scope == "paired"):
            raise ConfigError(
                "flow.colour_weight weighs colour in the plan's cost, but "
                f"flow.objective={self.objective} with flow.scope={self.scope} pairs without a "
                "cost: use ot-cfm or sb-cfm with scope local, global or dataset"
            )
        if self.identity_batch < 1:
            raise ConfigError(f"flow.identity_batch must be >= 1, got {self.identity_batch}")
        if self.identity_weight > 0 and self.source_condition:
            raise ConfigError(
                "flow.identity_weight is not supported with flow.source_condition=true: "
                "use one or the other"
            )
        if self.source_noise > 0 and not self.source_condition:
            raise ConfigError(
                "flow.source_noise needs flow.source_condition=true: the noise goes on each "
                "row's source end, which only a conditioned field is told"
            )

    @property
    def exact_plan(self) -> bool:
        """Whether pairs come from the exact OT plan (ot-cfm, or sb-cfm without regulariser,
        either with balanced marginals: ``unbalanced_tau`` = 1)."""
        balanced = self.unbalanced_tau == 1
        return balanced and (
            self.objective == "ot-cfm" or (self.objective == "sb-cfm" and self.sinkhorn_reg == 0)
        )


@dataclass
class AdversarialConfig:
    """The adversarial endpoint term (translate.adversarial); weight 0 is plain OT-CFM.

    The defaults are the measured recipe of docs/SHARPNESS.md (run 6).
    """

    weight: float = 0.5  # lambda on the generator loss, added to the CFM regression; 0: off
    start: int = 200  # optimizer steps of pure CFM before the term starts (warm start)
    # step after which the discriminators start to train; null: with the generator term (start)
    disc_start: int | None = 0
    ramp: int = 200  # steps over which lambda rises linearly from 0 to weight
    r1_gamma: float = 0.05  # R1 gradient penalty on real latents (Mescheder et al. 2018)
    # R1 of the discriminators on decoded images: 0.05 over 12288 pixel inputs held one at
    # chance (docs/SHARPNESS.md, the discriminator probe), so none, as in UNSB
    pixel_r1_gamma: float = 0.0
    # lazy R1 (StyleGAN2): the penalty on every r1_every-th step only, at r1_every * r1_gamma
    r1_every: int = 1
    lr: float = 1e-3  # discriminators' AdamW learning rate
    width: int = 32  # channels of the discriminators' first layer
    # uniform: every predicted endpoint counts alike; distance: by how far it jumps (1 - t for
    # A -> B, t for B -> A), so that one-step translations from the sources dominate
    weighting: str = "uniform"
    # where the judged predictions start: 0, points of the path x_t (the CFM step's own); K > 0,
    # the states the field itself reaches after k of K Euler steps from real sources (k per
    # sample, as trajectory_states says), as inference does with K steps (UNSB's simulated states)
    trajectory_steps: int = 4
    # which of those states: uniform (k drawn in [0, K)); last (k = K - 1: the judged
    # prediction is the K-step Euler translation itself); ends (k = 0 or K - 1)
    trajectory_states: str = "uniform"
    trajectory_batch: int = 16  # sources per domain rolled out per step (trajectory_steps > 0)
    # real latents per domain in each discriminator step: null, every real latent of the batch;
    # n, the batch's first n (R1 is taken on them too; in pixel space, as many as fakes)
    real_batch: int | None = None
    # latents: the discriminators judge latents; pixels: they judge decoded images (the frozen
    # VAE decoder in the generator's graph; the real ends are decoded too); pixels-a: only
    # domain A's discriminator, the judge of the B -> A endpoints, on decoded images, B's on
    # latents; pixels-b: the reverse; latents+pixels: both on latents, and for each domain a
    # second one on decoded images, its generator term added; latents+pixels-a (-b): the second
    # for domain A (B) only. Discriminators on decoded images take pixel_r1_gamma, on latents
    # r1_gamma
    space: str = "latents"
    # the discriminators on decoded images see only their detail: the images less their
    # Gaussian blur of this sigma in pixels (translate.adversarial.high_pass), so they judge how
    # crisp lines and fills are, not which colours fill them; 0: the whole images
    pixel_highpass: float = 0.0
    # DiffAugment (Zhao et al., NeurIPS 2020) of every discriminator input, real and fake alike,
    # and of the generator term's fakes: none | translation | cutout | translation-cutout
    augment: str = "none"
    # the content term (translate.content): PatchNCE between each judged endpoint and its
    # source (Park et al. 2020; UNSB's content term), added with this weight and ramped with
    # the adversarial term; 0: off. The feature net trains at adversarial.lr
    nce_weight: float = 0.0
    nce_patches: int = 64  # latent locations sampled per image (positives and negatives)
    nce_temperature: float = 0.07  # of the contrastive softmax (CUT's value)
    # the transport cost tau |z_src - z_hat|^2 of each judged endpoint from its source (UNSB's
    # Schrodinger-bridge cost), added with this weight and ramped likewise; 0: off
    transport_weight: float = 0.0
    # the colour term (translate.content.colour_consistency): each judged endpoint and its
    # source, both decoded by the frozen VAE, compared in CIELAB, added with this weight and
    # ramped likewise; 0: off
    colour_weight: float = 0.0
    # layout: the colours averaged over cells of colour_cell x colour_cell pixels, place by
    # place; composition: the chromatic pixels' colour distributions, wherever they lie
    colour_match: str = "layout"
    colour_cell: int = 8

    def __post_init__(self) -> None:
        _choice("adversarial.weighting", self.weighting, WEIGHTINGS)
        _choice("adversarial.space", self.space, SPACES)
        _choice("adversarial.augment", self.augment, AUGMENTATIONS)
        _choice("adversarial.colour_match", self.colour_match, COLOUR_MATCHES)
        _positive("adversarial.colour_cell", self.colour_cell)
        _choice("adversarial.trajectory_states", self.trajectory_states, ROLLOUT_STATES)
        _positive("adversarial.trajectory_batch", self.trajectory_batch)
        if self.real_batch is not None:
            _positive("adversarial.real_batch", self.real_batch)
        _positive("adversarial.r1_every", self.r1_every)
        keys = ("weight", "start", "ramp", "r1_gamma", "pixel_r1_gamma", "disc_start")
        keys += ("trajectory_steps", "pixel_highpass")
        for key in (*keys, "nce_weight", "transport_weight", "colour_weight"):
            value = getattr(self, key)
            if not 0 <= (value or 0) < math.inf:  # NaN fails too
                raise ConfigError(f"adversarial.{key} must be >= 0 and finite, got {value}")
        _positive("adversarial.lr", self.lr)
        _positive("adversarial.width", self.width)
        if self.nce_patches < 2:
            raise ConfigError(
                f"adversarial.nce_patches must be >= 2 (a positive and a negative), "
                f"got {self.nce_patches}"
            )
        _positive("adversarial.nce_temperature", self.nce_temperature)
        for key in ("nce_weight", "transport_weight", "colour_weight"):
            if getattr(self, key) > 0 and self.weight == 0:
                raise ConfigError(
                    f"adversarial.{key} needs adversarial.weight > 0: the term compares the "
                    "endpoints the adversarial term judges with their sources"
                )
        if self.pixel_highpass > 0 and self.space == "latents":
            raise ConfigError(
                "adversarial.pixel_highpass filters decoded images, but adversarial.space=latents "
                "has no discriminator on them: use a space with pixels in it"
            )


@dataclass
class ReflowConfig:
    """Reflow with real targets (translate.reflow); ``share`` 0 is off.

    The last ``share`` of ``train.steps`` regress the field onto fixed pairs drawn from its EMA
    weights (``nfe`` Euler steps) instead of minibatch-OT pairs, each pair with one real end,
    in ``rounds`` equal rounds (fresh pairs each). The defaults are the measured recipe of
    docs/SHARPNESS.md (run 7).
    """

    share: float = 0.25  # of train.steps, at the end; 0: no reflow (the OT-CFM pairs throughout)
    rounds: int = 1
    nfe: int = 4  # Euler steps of the translations that make the pairs
    # both: (T_BA(b), b) and (a, T_AB(a)); a2b: only (T_BA(b), b), whose B end is real; b2a
    pairs: str = "both"

    def __post_init__(self) -> None:
        _choice("reflow.pairs", self.pairs, REFLOW_PAIRS)
        _positive("reflow.nfe", self.nfe)
        _positive("reflow.rounds", self.rounds)
        if not 0 <= self.share < 1:
            raise ConfigError(f"reflow.share must be in [0, 1), got {self.share}")


@dataclass
class ModelConfig:
    """The UNet2DModel vector field; the latent shape comes from the VAE."""

    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])  # per level
    attention: list[bool] = field(
        default_factory=lambda: [False, False, True]
    )  # self-attn per level
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if len(self.attention) != len(self.block_out_channels):
            raise ConfigError(
                "model.attention needs one entry per model.block_out_channels level, got "
                f"{len(self.attention)} and {len(self.block_out_channels)}"
            )


@dataclass
class TrainConfig:
    output_dir: str = "runs/emoji"  # run folder; rerunning the same command resumes it
    steps: int = 800  # optimizer steps in total
    batch_size: int = 128  # per process and per accumulation step
    gradient_accumulation_steps: int = 1
    lr: float = 5e-4
    warmup_steps: int = 100
    # learning rate after the warmup: constant | cosine | linear (to 0 at the last step;
    # diffusers.optimization.get_scheduler)
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # the EMA's decay at optimizer step n is min(ema_decay, n / (9 + n)) (diffusers' EMAModel):
    # an average over about the last tenth of the run; the cap binds only from step
    # 9 * ema_decay / (1 - ema_decay) on, 8991 for 0.999 (docs/SHARPNESS.md §3, EMA)
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 25  # steps between tracker logs
    sample_every: int = 200  # steps between sample grids
    checkpoint_every: int = 200  # steps between resumable states and exported checkpoints
    keep_checkpoints: int = 2  # states and exports kept (checkpoint-final is always kept)
    log_with: str = "tensorboard"  # accelerate tracker: tensorboard, wandb, ... or "none"
    cpu_threads: int | None = None  # CPU only: threads per process; null shares all cores
    # among the local processes (accelerate launch would otherwise leave one thread each)
    # pair the next batch in a background thread (identical results); null: only on CUDA,
    # because on a CPU the thread competes with the step for cores (docs/PERFORMANCE.md)
    overlap_coupling: bool | None = None
    # autocast: "launcher" takes accelerate's (--mixed_precision, the accelerate config); "auto"
    # is bf16 on a CPU with native bf16 (AMX or AVX512-BF16, where it trains 1.7x faster:
    # docs/PERFORMANCE.md) and the launcher's otherwise; "no", "bf16", "fp16" force those
    mixed_precision: str = "auto"
    # speed options, each on only where measured to help (docs/PERFORMANCE.md); torch.compile
    # comes from the launcher: --dynamo_backend inductor
    channels_last: bool = False  # UNet weights and activations in NHWC memory format
    fused_adamw: bool = False  # the AdamW update as one fused kernel (CUDA and CPU)
    # where the train latents live: "memory" (the training device's, as float16), "mmap" (read
    # from the cache files), or "auto": memory when they take <= 1/4 of its free memory
    latent_storage: str = "auto"
    resume: str | None = None  # a state folder to resume from; default: latest in output_dir

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "gradient_accumulation_steps", "log_every"):
            _positive(f"train.{key}", getattr(self, key))
        for key in ("sample_every", "checkpoint_every", "keep_checkpoints"):
            _positive(f"train.{key}", getattr(self, key))
        _choice("train.latent_storage", self.latent_storage, LATENT_STORAGES)
        _choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("train.mixed_precision", self.mixed_precision, PRECISIONS)


MAX_GUIDANCE = 10.0  # the largest autoguidance weight a config, checkpoint or call may use


@dataclass
class GuidanceConfig:
    """Autoguidance at inference (``Translator.field``), a weight per direction; 1 is off.

    Training keeps its own EMA field after ``round(at * train.steps)`` steps as the *guide*, a
    weaker version of the final field, and the exported checkpoint translates with
    v = v_guide + w * (v - v_guide) (Karras et al., NeurIPS 2024, Eq. 1, on velocities), w the
    direction's weight, on the share of the direction's path from its source that
    ``<direction>_until`` says (the field alone beyond it). A guided step runs both UNets. The
    defaults are measured in docs/SHARPNESS.md (§3, autoguidance and guidance on part of the
    path): with the default's reflow round the guide is the field before it; A -> B gains from
    it on its whole path, B -> A on the first half of its path only.
    """

    a2b: float = 2.0  # weight of A -> B translations
    b2a: float = 2.0  # weight of B -> A translations; both 1: no guide is kept at all
    # the share of each direction's path, from its source, that is guided (the field alone on
    # the rest; after Kynkaanniemi et al., NeurIPS 2024, who guide on a limited interval):
    # B -> A guided on its whole path loses domain success, on its first half it does not
    a2b_until: float = 1.0
    b2a_until: float = 0.5
    at: float = 0.75  # share of train.steps after which the EMA field is kept as the guide

    def __post_init__(self) -> None:
        for direction in ("a2b", "b2a"):
            weight = getattr(self, direction)
            if not 0 <= weight <= MAX_GUIDANCE:  # NaN fails too
                raise ConfigError(
                    f"guidance.{direction} must be in [0, {MAX_GUIDANCE:g}], got {weight}"
                )
            until = getattr(self, f"{direction}_until")
            if not 0 < until <= 1:
                raise ConfigError(f"guidance.{direction}_until must be in (0, 1], got {until}")
        if not 0 < self.at < 1:
            raise ConfigError(f"guidance.at must be in (0, 1), got {self.at}")


def guide_step(cfg: Config) -> int:
    """The training step whose EMA field is kept as the guide; 0 when guidance is off."""
    if cfg.guidance.a2b == cfg.guidance.b2a == 1:
        return 0
    return min(max(1, round(cfg.guidance.at * cfg.train.steps)), cfg.train.steps)


@dataclass
class SampleConfig:
    count: int = 8  # test images per direction in each sample grid
    # ODE steps of the grids, and the exported checkpoint's default for translation (CLI, app,
    # converter: Translator.default_steps), in each direction whose own count below is null;
    # 4 = the steps the adversarial term and the reflow round train for (docs/SHARPNESS.md §5:
    # 4 Euler steps beat 8 A -> B)
    steps: int = 4
    # per direction, the same in place of ``steps``; null: ``steps``. B -> A takes 8: more
    # realistic and more often judged the target domain than at 4 in five runs of five, with
    # as much content (docs/SHARPNESS.md §5, "Steps per direction"), at twice the UNet calls
    a2b_steps: int | None = None
    b2a_steps: int | None = 8
    # the grids' solver, and the exported checkpoint's default (Translator.default_method):
    # euler | midpoint | rk4 | dopri5
    method: str = "euler"

    def __post_init__(self) -> None:
        _positive("sample.count", self.count)
        _positive("sample.steps", self.steps)
        for name in ("a2b_steps", "b2a_steps"):
            if getattr(self, name) is not None:
                _positive(f"sample.{name}", getattr(self, name))
        _choice("sample.method", self.method, METHODS)

    def steps_of(self, direction: str) -> int:
        """The step count of ``direction`` ("a2b" or "b2a"): its own, else ``steps``."""
        own = self.a2b_steps if direction == "a2b" else self.b2a_steps
        return self.steps if own is None else own


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    reflow: ReflowConfig = field(default_factory=ReflowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    def __post_init__(self) -> None:
        """Refuse, before any work, combinations that could only fail later (e.g. mid-run)."""
        for name, channels, groups in (
            ("model", self.model.block_out_channels, self.model.norm_num_groups),
            ("vae.own", self.vae.own.block_out_channels, self.vae.own.norm_num_groups),
        ):
            bad = [c for c in channels if c % groups]
            if bad:
                raise ConfigError(
                    f"{name}.block_out_channels {channels} must all be multiples of "
                    f"{name}.norm_num_groups={groups} (group normalisation); {bad} are not"
                )
        reflow_steps = round(self.reflow.share * self.train.steps)
        if reflow_steps and self.reflow.rounds > reflow_steps:
            raise ConfigError(
                f"reflow.rounds={self.reflow.rounds} is more than the {reflow_steps} reflow steps "
                f"(reflow.share={self.reflow.share} of train.steps={self.train.steps})"
            )
        cell, resolution = self.adversarial.colour_cell, self.data.resolution
        if self.adversarial.colour_weight > 0 and resolution % cell:
            raise ConfigError(
                f"adversarial.colour_cell={cell} must divide data.resolution={resolution}: the "
                "colour term averages the decoded images over whole cells"
            )
        if not self.vae.pretrained:  # the own VAE's factor is known now; a pretrained one's on load
            check_resolution(self, 2 ** (len(self.vae.own.block_out_channels) - 1))


def unet_factor(cfg: ModelConfig) -> int:
    """How much the UNet downsamples its input: 2 per level after the first."""
    return 2 ** (len(cfg.block_out_channels) - 1)


def check_resolution(cfg: Config, vae_factor: int) -> None:
    """``data.resolution`` must be a multiple of the VAE's factor times the UNet's.

    Raises ConfigError naming the nearest valid resolutions.
    """
    multiple = vae_factor * unet_factor(cfg.model)
    resolution = cfg.data.resolution
    if resolution % multiple:
        below = max(multiple, resolution // multiple * multiple)
        raise ConfigError(
            f"data.resolution={resolution} must be a multiple of {multiple} (the VAE's factor "
            f"{vae_factor} x the UNet's {unet_factor(cfg.model)} from its "
            f"{len(cfg.model.block_out_channels)} levels); e.g. {below} or {below + multiple}"
        )


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Build a validated ``Config`` from an optional YAML file and ``key=value`` overrides."""
    schema = OmegaConf.structured(Config)
    try:
        layers: list[Any] = [schema]
        if path is not None:
            if not Path(path).is_file():
                raise ConfigError(f"config file not found: {str(path)!r}")
            layers.append(OmegaConf.create(_read_yaml_file(Path(path))))
        dotlist = OmegaConf.create()
        for item in overrides:
            key, equals, value = item.partition("=")
            if not equals or not key.strip():
                raise ConfigError(f"override {item!r} is not of the form key=value")
            OmegaConf.update(dotlist, key, _yaml(value, f"override {item!r}"), force_add=True)
        layers.append(dotlist)
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(" ".join(_describe(err, schema).split())) from None
    except (TypeError, ValueError, RecursionError) as err:  # OmegaConf on odd keys or values
        raise ConfigError(f"invalid config: {' '.join(first_line(err).split())}") from None
    except OSError as err:  # e.g. a path too long to look up
        raise ConfigError(f"config file {str(path)!r}: {first_line(err)}") from None


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans and no implicit dates, duplicate keys or
    aliases.

    YAML 1.1 reads yes, no, on, off, y and n as booleans, which turned the documented
    ``train.mixed_precision=no`` into the string 'False'; here only true and false (the YAML 1.2
    core schema's spellings) are booleans, and the words reach string fields as written (boolean
    fields still take them, through OmegaConf). Dates stay strings (a folder may be named
    2024-01-01), a repeated key is an error instead of a silent overwrite, and anchors and
    aliases, which can expand a short text without bound, are refused.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed here", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict) or key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is repeated or not a name", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_DROPPED = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _yaml(text: str, where: str) -> Any:
    """Parse YAML text (a config file, or one override's value) with ``_ConfigLoader``.

    Raises ConfigError, one line naming ``where``, the line and column and the problem.
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(err.problem or err.context or "").split())
        raise ConfigError(f"{where}: not valid YAML ({at}{problem})") from None
    except (yaml.YAMLError, RecursionError) as err:
        raise ConfigError(f"{where}: not valid YAML ({first_line(err)})") from None


def _read_yaml_file(path: Path) -> dict[str, Any]:
    """A config file's top-level mapping ({} for an empty file). Raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r}: {first_line(err)}") from None
    values = _yaml(text, f"config file {str(path)!r}")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections (data:, train:, ...); "
            f"it holds a {type(values).__name__}"
        )
    return values


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a ``Config`` from the plain dict stored in a run folder or checkpoint."""
    schema = OmegaConf.structured(Config)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, values))  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err, schema)) from None


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain Python values (for JSON/YAML)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _describe(err: OmegaConfBaseException, schema: DictConfig) -> str:
    """Turn an OmegaConf exception into one line naming the key and the valid choices."""
    key = getattr(err, "full_key", None) or ""
    message = first_line(err)
    parent_key, _, leaf = key.rpartition(".")
    node = OmegaConf.select(schema, parent_key) if parent_key else schema
    if isinstance(node, DictConfig) and leaf and leaf not in node:
        valid = ", ".join(f"{parent_key + '.' if parent_key else ''}{k}" for k in node)
        return f"unknown config key '{key}'; valid keys here: {valid}"
    return f"config key '{key}': {message}" if key else f"invalid config: {message}"


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
