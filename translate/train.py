"""The flow-matching training loop (run under ``accelerate launch``).

Each step: draw an A-batch and a B-batch of latents, pair them (``translate.coupling``), sample
the path (``translate.flow``) and regress the UNet onto the target velocity.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from translate import atomic, runs
from translate.adversarial import (
    Adversary,
    DiscriminatorLoss,
    Endpoints,
    Views,
    critics,
    endpoint_weights,
    ramp,
)
from translate.codec import quiet_diffusers
from translate.config import (
    Config,
    TrainConfig,
    config_from_dict,
    guide_step,
    to_dict,
    to_yaml,
)
from translate.content import ContentTerm, colour_consistency, transport_cost
from translate.coupling import (
    Coupler,
    DatasetPlan,
    GlobalCoupler,
    MinibatchPairs,
    Pairing,
    PlanPairs,
    build_coupler,
)
from translate.errors import TranslateError, first_line, is_disk_full, require
from translate.flow import (
    CFMStep,
    SourceCondition,
    build_path,
    cfm_step,
    identity_loss,
    identity_rows,
    noised_sources,
    predicted_endpoints,
    rollout_states,
    rollout_steps,
)
from translate.images import grid, load_rgb, resize_center_crop
from translate.latent_sampling import LatentSampler, free_memory, keep_in_memory
from translate.model import build_unet, velocity
from translate.pipeline import Translator, TranslatorInfo
from translate.precision import native_bf16_cpu
from translate.prefetch import Generators, PairStream
from translate.reflow import ReflowPairs, ReflowSource, generate_pairs, round_start, round_starts
from translate.training_data import PreparedData, prepare_data

# A trained UNet's weights stay within a few units and its velocities within a few latent
# standard deviations; values this large mean the run diverged (NaN guard, docs in _save).
WEIGHT_LIMIT = 1e4
VELOCITY_LIMIT = 1e3


def mixed_precision(setting: str, cuda: bool) -> str | None:
    """The ``Accelerator``'s mixed_precision for ``train.mixed_precision``; None: the launcher's.

    ``auto`` is bf16 on a CPU with native bf16 arithmetic (AMX tiles or AVX512-BF16), where
    autocast trains 1.7x faster (docs/PERFORMANCE.md) and an emulated one would be slower.
    """
    if setting == "launcher":
        return None
    if setting != "auto":
        return setting
    if not cuda and native_bf16_cpu():
        return "bf16"
    return None


def main(cfg: Config) -> Path:
    """Train (or resume, or report done) and return the final checkpoint folder."""
    if cfg.train.log_with == "tensorboard":
        what = "train.log_with=tensorboard (train.log_with=none trains without logs)"
        require(("tensorboard",), what, "train")
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # lets torchrun/accelerate form a gloo group on CPUs
        mixed_precision=mixed_precision(cfg.train.mixed_precision, torch.cuda.is_available()),
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        log_with=None if cfg.train.log_with == "none" else cfg.train.log_with,
        project_config=ProjectConfiguration(
            project_dir=cfg.train.output_dir, logging_dir=str(Path(cfg.train.output_dir, "logs"))
        ),
    )
    try:
        final = _run(cfg, accelerator)
        accelerator.wait_for_everyone()
        return final
    except Exception as err:
        if not is_disk_full(err):
            raise
        out = Path(cfg.train.output_dir)
        runs.clean_temporaries(out / runs.STATE)  # the half-written state frees its space
        runs.clean_temporaries(out)
        kept = runs.latest_state(out) or "no resume point yet"
        raise TranslateError(
            f"the disk is full ({first_line(err)}); kept: {kept}, and every finished stage "
            "in the cache; free space and rerun the same command to resume"
        ) from None
    finally:
        accelerator.end_training()  # closes trackers and destroys the process group


def _run(cfg: Config, accelerator: Accelerator) -> Path:
    out = Path(cfg.train.output_dir)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise TranslateError(
            f"launched {launched} processes but accelerate formed a group of "
            f"{accelerator.num_processes}; check the launcher's settings"
        )
    if accelerator.device.type == "cpu":
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(cfg.train.cpu_threads or max(1, (os.cpu_count() or 1) // local))
    done = runs.finished_step(out)
    if done is not None and done >= cfg.train.steps:
        accelerator.print(f"{out} already finished {done} steps: {out / runs.FINAL}")
        accelerator.print(runs.where_next(out, done))
        return out / runs.FINAL
    _check_same_run(out, cfg)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        runs.clean_temporaries(out)
        runs.clean_temporaries(out / runs.STATE)
        (out / "config.yaml").write_text(to_yaml(cfg))
    with accelerator.main_process_first():
        data = prepare_data(cfg, accelerator.device)
    if data.source.skipped:
        accelerator.print(
            f"warning: skipped {len(data.source.skipped)} broken symbolic link(s), "
            f"e.g. {data.source.skipped[0]}"
        )
    for name, encoded in (
        ("trainA", data.train_a),
        ("trainB", data.train_b),
        ("testA", data.test_a),
        ("testB", data.test_b),
    ):
        if encoded.failures:
            accelerator.print(
                f"warning: skipped {len(encoded.failures)} unreadable image(s) in "
                f"{name}, e.g. {encoded.failures[0]}"
            )
    if data.vae_test_psnr is not None:
        accelerator.print(f"VAE reconstruction PSNR on the test split: {data.vae_test_psnr:.2f} dB")
    return Trainer(cfg, accelerator, data).fit()


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, processes: int = 1):
    """The learning-rate schedule: ``cfg.warmup_steps`` of linear warmup, then constant, or a
    cosine or linear decay to 0 at step ``cfg.steps`` (``diffusers.optimization``). Counted in
    scheduler steps, of which accelerate takes one per process at every optimizer step."""
    name = "constant_with_warmup" if cfg.lr_schedule == "constant" else cfg.lr_schedule
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=cfg.warmup_steps * processes,
        num_training_steps=cfg.steps * processes,
    )


class Trainer:
    """State of one run; ``fit`` is the loop."""

    def __init__(self, cfg: Config, accelerator: Accelerator, data: PreparedData) -> None:
        self.cfg, self.accelerator, self.data = cfg, accelerator, data
        self.out = Path(cfg.train.output_dir)
        latent_shape = tuple(data.train_a.latents.shape[1:])  # (C, h, w)
        self.latent_shape = latent_shape
        torch.manual_seed(cfg.train.seed)
        unet = self._build_unet()
        self.ema = EMAModel(
            unet.parameters(),
            decay=cfg.train.ema_decay,
            model_cls=UNet2DModel,
            model_config=unet.config,
        )
        unet.to(accelerator.device)  # fused AdamW needs the parameters on their device
        if cfg.train.channels_last:
            unet.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(
            unet.parameters(),
            lr=cfg.train.lr,
            weight_decay=cfg.train.weight_decay,
            fused=cfg.train.fused_adamw or None,  # None: torch's own choice (foreach)
        )
        scheduler = build_scheduler(optimizer, cfg.train, accelerator.num_processes)
        self.unet, self.optimizer, self.scheduler = accelerator.prepare(unet, optimizer, scheduler)
        self.ema.to(accelerator.device)
        # the EMA weights travel with every save_state / load_state, as safetensors
        accelerator.register_save_state_pre_hook(self._save_ema)
        accelerator.register_load_state_pre_hook(self._load_ema)
        device = accelerator.device
        self.gens = Generators.create(cfg.train.seed, accelerator.process_index, device)
        train_sets = (data.train_a.latents, data.train_b.latents)  # float16 memory maps
        nbytes = sum(x.nelement() * x.element_size() for x in train_sets)
        if keep_in_memory(cfg.train.latent_storage, nbytes, free_memory(device)):
            train_sets = tuple(x.to(device, copy=True) for x in train_sets)
        else:
            accelerator.print(f"reading {nbytes / 2**30:.2f} GiB of latents from the cache files")
        sample_a, sample_b = (LatentSampler(x, device) for x in train_sets)
        self.samplers = (sample_a, sample_b)
        self.round: int | None = None  # first step of the reflow round being trained, if any
        self.pairs = PairStream(
            self._pair_source(sample_a, sample_b),
            cfg.train.batch_size,
            self.gens,
            # the next step's pairing is computed while this step runs (not with global scope,
            # whose gather is a collective that must stay on the training thread)
            overlap=self._overlap(),
        )
        self.path = build_path(cfg.flow.objective, cfg.flow.sigma)
        adv = cfg.adversarial
        self.adversary = None  # weight 0: no discriminators at all, the plain recipe
        if adv.weight > 0:
            judged = {name: seen for name, (_, seen) in critics(adv.space).items()}
            self.adversary = Adversary(
                latent_shape[0],
                adv.width,
                adv.lr,
                {
                    name: adv.pixel_r1_gamma if seen == "pixels" else adv.r1_gamma
                    for name, seen in judged.items()
                },
                device,
                cfg.train.seed,
                self._decode if "pixels" in judged.values() else None,
                adv.augment,
                adv.space,
                adv.pixel_highpass,
            )
        self.content = None  # nce_weight 0: no feature net at all
        if adv.weight > 0 and adv.nce_weight > 0:
            shape = (latent_shape[0], adv.nce_patches, adv.nce_temperature)
            self.content = ContentTerm(*shape, adv.lr, device, cfg.train.seed)
        self.step = 0
        self._samples: list | None = None  # see _sample_sources
        self.guide_step = guide_step(cfg)  # 0: no guide (both guidance weights 1)
        self.guide: UNet2DModel | None = None  # the EMA field kept at guide_step

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images for pixel-space discriminators and the colour term, in the run's
        autocast (the frozen decoder passes their gradients on to the latents)."""
        with self.accelerator.autocast():
            return self.data.codec.decode_differentiable(latents)

    def _build_unet(self) -> UNet2DModel:
        shape = self.latent_shape  # (C, h, w)
        return build_unet(self.cfg.model, shape[-1], shape[0], self.cfg.flow.source_condition)

    def _reflow_translate(self, first: int):
        """(latents, direction) -> their translations by the EMA field in ``reflow.nfe`` Euler
        steps, in the run's autocast (bf16, or fp16 on a GPU, where training uses it; bf16 is
        twice as fast on a CPU with native bf16, docs/PERFORMANCE.md §11); a source-noised
        field's noise comes from a stream seeded by the run's seed and the round's first step,
        so that every process draws the same pairs."""
        translator, nfe = self.translator(guided=False), self.cfg.reflow.nfe  # the EMA field
        draw = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + first)

        def translate(latents: torch.Tensor, direction: str) -> torch.Tensor:
            noise = None
            if translator.info.source_noise:
                noise = torch.randn(latents.shape, generator=draw)
            with self.accelerator.autocast():
                solution = translator.translate_latents(
                    latents, direction, nfe, "euler", noise=noise
                )
            return solution.x.float()

        return translate

    def _pair_source(
        self, sample_a: LatentSampler, sample_b: LatentSampler
    ) -> MinibatchPairs | PlanPairs:
        cfg, acc = self.cfg, self.accelerator
        if cfg.flow.scope == "paired":
            names = self.data.train_a.names, self.data.train_b.names
            acc.print(f"pairing the {len(names[0])} A-latents with their B files of the same name")
            plan = DatasetPlan.by_name(*names, sample_a.latents, sample_b.latents)
            return PlanPairs(sample_a, sample_b, plan)
        colours = self.data.train_colours  # None unless flow.colour_weight > 0
        if cfg.flow.scope == "dataset":  # every process solves the same plan (deterministic)
            acc.print(f"solving the OT plan between {len(sample_a)} and {len(sample_b)} latents")
            cost = (cfg.flow.cost_resolution, colours, cfg.flow.colour_weight)
            plan = DatasetPlan.solve(sample_a.latents, sample_b.latents, *cost)
            return PlanPairs(sample_a, sample_b, plan)
        coupler: Coupler = build_coupler(cfg.flow)
        if cfg.flow.scope == "global" and acc.num_processes > 1:
            coupler = GlobalCoupler(coupler, acc.gather, acc.process_index, acc.num_processes)
        return MinibatchPairs(sample_a, sample_b, coupler, colours)

    def _overlap(self) -> bool:
        overlap = self.cfg.train.overlap_coupling
        if overlap is None:
            overlap = self.accelerator.device.type == "cuda"
        return overlap and not (
            self.cfg.flow.scope == "global" and self.accelerator.num_processes > 1
        )

    # ----------------------------------------------------------------------------- loop
    def fit(self) -> Path:
        cfg, acc = self.cfg, self.accelerator
        self._resume()
        self._restore_guide()
        if acc.is_main_process and cfg.train.log_with != "none":
            acc.init_trackers("translate", config=_flat(to_dict(cfg)))
        bar = tqdm(
            total=cfg.train.steps,
            initial=self.step,
            desc="flow: training",
            unit="step",
            disable=not acc.is_local_main_process,
        )
        try:
            self._export_missing()
            self._loop(bar)
        finally:
            self.pairs.close()
            bar.close()  # an error is then printed on its own line, not on the bar's
        acc.print(f"finished {self.step} steps: {self.out / runs.FINAL}")
        acc.print(runs.where_next(self.out, self.step))
        return self.out / runs.FINAL

    def _loop(self, bar: tqdm) -> None:
        """Train until ``train.steps``: sample grids, logs and checkpoints on schedule."""
        cfg, acc = self.cfg, self.accelerator
        window_start, window_steps = time.perf_counter(), 0
        while self.step < cfg.train.steps:
            self._reflow_round()
            with acc.accumulate(self.unet):
                pairing = self.pairs.next()
                cost_ratio = pairing.cost_ratio
                mean_loss, grad_norm, adv, terms = self._update(pairing)
            if not acc.sync_gradients:
                continue
            self.ema.step(self.unet.parameters())
            self.step += 1
            if self.step == self.guide_step:
                self._keep_guide()
            window_steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", pair_cost=f"{cost_ratio:.3f}")
            if self.step % cfg.train.log_every == 0:
                elapsed = time.perf_counter() - window_start
                acc.log(
                    {
                        "loss": mean_loss,
                        "lr": self.scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm),
                        "pair_cost_ratio": cost_ratio,
                        "steps_per_s": window_steps / max(elapsed, 1e-9),
                        **(adv.log() if adv is not None else {}),
                        **{name: acc.reduce(v, "mean").item() for name, v in terms.items()},
                    },
                    step=self.step,
                )
                window_start, window_steps = time.perf_counter(), 0
            final = self.step == cfg.train.steps
            if self.step % cfg.train.sample_every == 0 or final:
                self._sample_grid()
            if self.step % cfg.train.checkpoint_every == 0 or final:
                self._save(final)

    def _update(
        self, pairing: Pairing
    ) -> tuple[float, torch.Tensor | None, AdversarialStep | None, dict[str, torch.Tensor]]:
        """One (micro-)step on a pairing: the regression, the adversarial term, the optimizer.

        Returns the loss averaged over processes, the clipped gradient norm (None between
        accumulation steps), the adversarial term's record (None while it is off) and this
        process's other terms by log name, unweighted (``identity`` where
        ``flow.identity_weight`` > 0; the log averages them over processes).
        """
        cfg, acc = self.cfg, self.accelerator
        weight = self._adversarial_weight()
        rollout = self._rollout(pairing, weight)
        # the rolled-out states join the regression's forward pass only when the generator
        # term needs their gradient
        x0, x1, condition = pairing.x0, pairing.x1, None
        if cfg.flow.source_condition:  # roles and source noise (translate.flow.noised_sources)
            x0, x1, condition = noised_sources(x0, x1, cfg.flow.source_noise, self.gens.path)
        identity = None
        if cfg.flow.identity_weight > 0:  # the first identity_batch real latents of each domain
            real_a, real_b = pairing.real_ends
            m = cfg.flow.identity_batch
            identity = identity_rows(real_a[:m], real_b[:m])
        field = JointField(
            self.unet, rollout, join=bool(weight), condition=condition, identity=identity
        )
        step = cfm_step(
            field,
            x0,
            x1,
            self.path,
            self.gens.path,
            cfg.flow.time_sampling,
            cfg.flow.high_frequency_weight,
        )
        adv = self._adversarial_step(step, field, weight, Endpoints(x0, x1))
        loss, terms = step.loss, {}
        if identity is not None:
            terms["identity"] = identity_loss(field.identity_velocity)
            loss = loss + cfg.flow.identity_weight * terms["identity"]
        if adv is not None and adv.generator is not None:
            loss = loss + adv.weight * adv.generator
        if adv is not None and adv.content is not None:
            loss = loss + adv.weight / cfg.adversarial.weight * adv.content  # ramped alike
        mean_loss = acc.gather(step.loss.detach()[None]).mean().item()
        if not math.isfinite(mean_loss):
            raise TranslateError(self._poisoned("loss", mean_loss))
        acc.backward(loss)
        grad_norm = None
        if acc.sync_gradients:
            grad_norm = acc.clip_grad_norm_(self.unet.parameters(), cfg.train.max_grad_norm)
            if acc.mixed_precision != "fp16" and not torch.isfinite(grad_norm):
                raise TranslateError(self._poisoned("gradient norm", grad_norm.item()))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.content is not None and adv is not None and adv.content is not None:
            self.content.step(acc.reduce)  # the feature net, on the gradient it just received
        if adv is not None:
            adv.discriminator = self.adversary.update(
                self._real_view(pairing, adv.fake),
                adv.fake,
                acc.reduce,
                adv.weights,
                self.gens.rollout,
                self._r1_scale(),
            )
        terms = {name: value.detach() for name, value in terms.items()}
        return mean_loss, grad_norm, adv, terms

    def _r1_scale(self) -> float:
        """The factor on the R1 weights of the coming step's discriminator update: lazy
        regularisation (Karras et al., CVPR 2020, StyleGAN2, Sec. 3.1) takes R1 only on every
        ``adversarial.r1_every``-th optimizer step, weighted by that factor so that its mean
        weight stays as configured; 0 on the steps between."""
        every = self.cfg.adversarial.r1_every
        return float(every) if (self.step + 1) % every == 0 else 0.0

    def _real_view(self, pairing: Pairing, fake: Views) -> Views:
        """The real ends as each discriminator sees them (by name): on latents, every real
        latent of its domain in the batch or the first ``adversarial.real_batch``; in pixel
        space, the first as many as it has fakes, decoded (once per domain)."""
        real, n = Endpoints(*pairing.real_ends), self.cfg.adversarial.real_batch
        views, images = {}, {}
        for name, (domain, _) in self.adversary.critics.items():
            latents = getattr(real, domain)
            if self.adversary.in_pixels(name):
                if domain not in images:
                    with torch.no_grad():
                        images[domain] = self.adversary.decode(latents[: len(fake[name])])
                views[name] = images[domain]
            else:
                views[name] = latents if n is None else latents[:n]
        return views

    def _reflow_round(self) -> None:
        """Switch the pair stream to a reflow round's pairs when the coming step starts one.

        At a round's first step the pairs are drawn from the EMA field and written to
        ``reflow/round-NNNNNN.safetensors``; a run resumed inside a round reads them back.
        """
        cfg = self.cfg.reflow
        first = round_start(self.step, round_starts(cfg.share, cfg.rounds, self.cfg.train.steps))
        if first is None or first == self.round:
            return
        path = self.out / "reflow" / f"{runs.step_name('round', first)}.safetensors"
        metadata = {"step": str(first), "nfe": str(cfg.nfe), "pairs": cfg.pairs}
        acc = self.accelerator
        if first == self.step:
            a, b = (sampler.latents for sampler in self.samplers)
            acc.print(f"reflow: translating {len(a)} + {len(b)} training latents ({cfg.nfe} steps)")
            pairs = generate_pairs(self._reflow_translate(first), a, b, cfg.pairs, acc.device)
            if acc.is_main_process:
                pairs.save(path, metadata)
            acc.wait_for_everyone()
        else:
            try:
                pairs = ReflowPairs.load(path, metadata)
            except Exception as err:
                raise TranslateError(
                    f"cannot resume inside the reflow round that began at step {first}: "
                    f"{first_line(err)}; resume from a state at or before that step"
                ) from None
        state = self.pairs.generator_state()  # a batch drawn ahead is discarded, as on resume
        self.pairs.close()
        self.gens.restore(state)
        self.pairs = PairStream(
            ReflowSource(pairs, *self.samplers),
            self.cfg.train.batch_size,
            self.gens,
            overlap=self._overlap(),
        )
        self.round = first

    def _adversarial_weight(self) -> float | None:
        """Lambda of the coming optimizer step, or None while the adversarial term is off.

        The discriminators train from ``adversarial.disc_start`` (default: ``start``); the
        generator term's weight is 0 during the warm start, then ramped to ``weight``.
        """
        if self.adversary is None:
            return None
        adv, coming = self.cfg.adversarial, self.step + 1
        disc_start = adv.start if adv.disc_start is None else adv.disc_start
        weight = adv.weight * ramp(coming, adv.start, adv.ramp)
        if weight == 0 and coming <= disc_start:
            return None
        return weight

    def _rollout(self, pairing: Pairing, weight: float | None) -> Rollout | None:
        """Sources of both domains carried along the field's own Euler trajectory (no grad).

        The first ``adversarial.trajectory_batch`` latents of each batch, after k of K Euler
        steps, k per sample as ``adversarial.trajectory_states`` says
        (``translate.flow.rollout_steps``, ``rollout_states``); None unless
        ``adversarial.trajectory_steps`` > 0 and the term is on.
        """
        steps = self.cfg.adversarial.trajectory_steps
        if weight is None or steps == 0:
            return None
        m = min(self.cfg.adversarial.trajectory_batch, len(pairing.x0))
        real_a, real_b = pairing.real_ends
        x = sources = torch.cat([real_a[:m], real_b[:m]])
        t_start = torch.cat([torch.zeros(m), torch.ones(m)]).to(x.device)
        states = self.cfg.adversarial.trajectory_states
        k = rollout_steps(states, steps, 2 * m, self.gens.rollout, x.device)
        condition = None
        if self.cfg.flow.source_condition:  # start from the noised sources, as inference does
            condition = SourceCondition.of(x, t_start == 1)
            eps = torch.randn(x.shape, generator=self.gens.rollout, device=x.device)
            x = x + self.cfg.flow.source_noise * eps
        with torch.no_grad():
            x_k, t_k = rollout_states(
                lambda y, t, rows: velocity(
                    self.unet, y, t, None if condition is None else condition.select(rows)
                ),
                x,
                t_start,
                steps,
                k,
            )
        return Rollout(x_k, t_k, m, sources, condition)

    def _adversarial_step(
        self, step: CFMStep, field: JointField, weight: float | None, ends: Endpoints
    ) -> AdversarialStep | None:
        """The predicted endpoints to judge, the generator loss and the content term of the
        coming step; ``ends`` are the regression's pairs (x0 as ``a``, x1 as ``b``)."""
        if weight is None:
            return None
        rollout = field.rollout
        if rollout is None:  # points of the path: both endpoints of every row
            t, fake = (
                step.sample.t,
                Endpoints(*predicted_endpoints(step.sample.x_t, step.sample.t, step.velocity)),
            )
            weights = endpoint_weights(t, self.cfg.adversarial.weighting)
            sources = Endpoints(ends.b, ends.a)  # z_A is predicted from x1's side, z_B from x0's
        else:  # rolled-out states: z_B from the A sources, z_A from the B sources
            m = rollout.per_domain
            v = field.extra_velocity
            if v is None:  # generator term off: the fakes alone, the field's pass untouched
                with torch.no_grad():
                    v = velocity(self.unet, rollout.x, rollout.t, rollout.condition)
            z_a, z_b = predicted_endpoints(rollout.x, rollout.t, v)
            fake = Endpoints(z_a[m:], z_b[:m])
            both = endpoint_weights(rollout.t, self.cfg.adversarial.weighting)
            weights = None if both is None else Endpoints(both.a[m:], both.b[:m])
            sources = Endpoints(rollout.sources[m:], rollout.sources[:m])
        content = self._content(fake, sources) if weight > 0 else None
        fake = self.adversary.view(fake)  # latents, or decoded images in pixel space
        generator = None
        if weight > 0:
            generator = self.adversary.generator_loss(fake, weights, self.gens.rollout)
        return AdversarialStep(weight, fake, weights, generator, content)

    def _content(self, fake: Endpoints, sources: Endpoints) -> torch.Tensor | None:
        """The weighted content terms of predicted endpoints against their sources (a scalar,
        before the ramp), or None when both weights are 0."""
        adv, terms = self.cfg.adversarial, []
        for d in ("a", "b"):
            translation, source = getattr(fake, d), getattr(sources, d)
            if self.content is not None:
                nce = self.content.loss(translation, source, self.gens.rollout)
                terms.append(adv.nce_weight * nce)
            if adv.transport_weight > 0:
                terms.append(adv.transport_weight * transport_cost(translation, source))
            if adv.colour_weight > 0:  # in pixels: the decoded endpoint against its decoded source
                with torch.no_grad():
                    source_images = self._decode(source)
                colour = colour_consistency(
                    self._decode(translation), source_images, adv.colour_match, adv.colour_cell
                )
                terms.append(adv.colour_weight * colour)
        return sum(terms) if terms else None

    def _export_missing(self) -> None:
        """Bring the exports up to date with the resumed state.

        A kill between a state's rename and its export (or a deleted export) leaves the newest
        state without its checkpoint; a finished state also needs ``checkpoint-final``.
        """
        if self.step == 0 or not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return
        translator = None
        wanted = [self.out / runs.step_name("checkpoint", self.step)]
        if self.step >= self.cfg.train.steps:
            wanted.append(self.out / runs.FINAL)
        for folder in wanted:
            if not (folder / "translator.json").is_file():
                translator = translator or self.translator()
                translator.save_pretrained(folder)
                self.accelerator.print(f"exported {folder} from the resumed state")
        runs.rotate(self.out, "checkpoint", self.cfg.train.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _check_not_diverged(self) -> Translator:
        """Refuse to save weights that have blown up, even when the loss is still finite.

        Checks the live and EMA weights (finite, |w| <= ``WEIGHT_LIMIT``) and the EMA model's
        velocity on the sample latents (finite, |v| <= ``VELOCITY_LIMIT``).
        """
        shadow = self.ema.shadow_params
        for name, params in (("weights", self.unet.parameters()), ("EMA weights", shadow)):
            peak = max(p.detach().abs().max().item() for p in params)
            if not math.isfinite(peak) or peak > WEIGHT_LIMIT:
                raise TranslateError(self._poisoned(f"the largest of the {name}", peak, now=True))
        translator = self.translator()
        latents = torch.cat([latents for _, _, latents in self._sample_sources()])
        latents = latents.to(translator.device)
        with torch.no_grad():
            v = translator.velocity_field(latents, "a2b", 1.0)(latents, torch.zeros(len(latents)))
        peak = v.abs().max().item()
        if not math.isfinite(peak) or peak > VELOCITY_LIMIT:
            raise TranslateError(self._poisoned("the largest velocity", peak, now=True))
        return translator  # the checked EMA model, to be exported

    def _poisoned(self, what: str, value: float, now: bool = False) -> str:
        last = runs.latest_state(self.out)
        step = self.step if now else self.step + 1
        return (
            f"{what} became {value:.4g} at step {step}; stopped without saving. "
            f"Last good state: {last or 'none'} (try a lower train.lr)"
        )

    # ----------------------------------------------------------------------- checkpoints
    def _ema_unet(self) -> UNet2DModel:
        unet = self._build_unet()
        self.ema.copy_to(unet.parameters())
        return unet

    def _keep_guide(self) -> None:
        """Keep the EMA field of this step as autoguidance's guide, in memory and in
        ``output_dir/guide`` (written before this step's state, so that a resumed run finds it)."""
        with torch.random.fork_rng(devices=[]):  # a guided run draws what an unguided one does
            self.guide = self._ema_unet()
        self._write_guide()

    def _write_guide(self) -> None:
        if self.accelerator.is_main_process:
            with atomic.atomic_dir(self.out / runs.GUIDE) as tmp:
                self.guide.save_pretrained(str(tmp / "unet"), safe_serialization=True)
                (tmp / "guide.json").write_text(json.dumps({"step": self.guide_step}))
        self.accelerator.wait_for_everyone()

    def _restore_guide(self) -> None:
        """After a resume at or past the guide's step, find the guide: ``output_dir/guide``,
        else the exported checkpoint of that step (its UNet is the same EMA field), else, at
        that very step, the EMA weights just loaded. TranslateError (one line) if none is left,
        e.g. for a run started before autoguidance or extended to more steps."""
        if not self.guide_step or self.step < self.guide_step:
            return
        kept = self._guide_record()
        recorded = kept == self.guide_step
        self.guide = self._kept_guide(recorded)
        if self.guide is None and self.step == self.guide_step:
            self._keep_guide()  # the EMA weights just loaded are the guide
        elif self.guide is not None and not recorded:
            self._write_guide()  # from the exported checkpoint: keep it for later resumes
        if self.guide is None:
            hint = (
                ""
                if kept is None
                else (
                    f", or keep the guide of step {kept} with "
                    f"guidance.at={kept / self.cfg.train.steps:.6g}"
                )
            )
            raise TranslateError(
                f"cannot resume at step {self.step} with a guide of step {self.guide_step}: "
                f"neither {self.out / runs.GUIDE} nor "
                f"{runs.step_name('checkpoint', self.guide_step)} holds it; "
                f"set guidance.a2b=1 guidance.b2a=1 to finish without autoguidance{hint}"
            )

    def _guide_record(self) -> int | None:
        """The step ``output_dir/guide`` was kept at, or None when there is none."""
        try:
            return int(json.loads((self.out / runs.GUIDE / "guide.json").read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _kept_guide(self, recorded: bool) -> UNet2DModel | None:
        """The EMA field of ``guide_step`` from disk (``output_dir/guide`` first where its
        record says that step), or None."""
        sources = [self.out / runs.step_name("checkpoint", self.guide_step) / "unet"]
        if recorded:
            sources.insert(0, self.out / runs.GUIDE / "unet")
        for folder in sources:
            try:
                with quiet_diffusers():
                    return UNet2DModel.from_pretrained(str(folder))
            except Exception:  # missing or damaged: try the next
                continue
        return None

    def translator(self, guided: bool = True) -> Translator:
        """A Translator on the current EMA weights (the exported and sampled model), with the
        guide once it is kept (``guided``: the reflow pairs are drawn without it)."""
        unet = self._ema_unet()
        guide = self.guide if guided else None
        info = TranslatorInfo(
            domain_a=self.data.source.name_a,
            domain_b=self.data.source.name_b,
            resolution=self.cfg.data.resolution,
            objective=self.cfg.flow.objective,
            sigma=self.cfg.flow.sigma,
            step=self.step,
            source_condition=self.cfg.flow.source_condition,
            source_noise=self.cfg.flow.source_noise,
            guidance=(
                {"a2b": self.cfg.guidance.a2b, "b2a": self.cfg.guidance.b2a}
                if guide is not None
                else {}
            ),
            guidance_until={  # only shares below 1: the whole path needs no entry
                d: share
                for d, share in (
                    ("a2b", self.cfg.guidance.a2b_until),
                    ("b2a", self.cfg.guidance.b2a_until),
                )
                if guide is not None and share < 1
            },
            config=to_dict(self.cfg),
        )
        examples = {direction: images for direction, images, _ in self._sample_sources()}
        device = self.accelerator.device
        return Translator(unet, self.data.codec, info, device, examples, guide)

    def _save(self, final: bool) -> None:
        """Resume point + exported checkpoint, each written under a temporary name first."""
        acc, cfg = self.accelerator, self.cfg
        translator = self._check_not_diverged()  # every process checks its own (identical) weights
        states = self.out / runs.STATE
        name = runs.step_name("step", self.step)
        tmp = atomic.temporary(states / name)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        streams = {**self.gens.state(), **self.pairs.generator_state()}
        save_file(streams, str(tmp / f"generators_{acc.process_index}.safetensors"))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if self.adversary is not None:
                self.adversary.save(tmp / "adversarial")
            if self.content is not None:
                self.content.save(tmp / "content")
            trainer_state = {"step": self.step, "device": acc.device.type}
            (tmp / "trainer_state.json").write_text(json.dumps(trainer_state))
            atomic.replace(tmp, states / name)
            runs.rotate(states, "step", cfg.train.keep_checkpoints)
            translator.save_pretrained(self.out / runs.step_name("checkpoint", self.step))
            runs.rotate(self.out, "checkpoint", cfg.train.keep_checkpoints)
            if final:
                translator.save_pretrained(self.out / runs.FINAL)
        acc.wait_for_everyone()

    def _resume(self) -> None:
        """Resume from ``train.resume`` or the newest usable state of the run folder.

        A newest state that does not load (a truncated or unsafe file) is reported in one line,
        renamed to ``state/damaged-step-N`` (kept for inspection, never deleted) and the next
        older one is tried.
        """
        acc = self.accelerator
        if self.cfg.train.resume:
            state = Path(self.cfg.train.resume)
            if not (state / "trainer_state.json").is_file():
                raise TranslateError(f"not a resumable state folder: {state}")
            try:
                self._load_state(state)
            except Exception as err:
                raise TranslateError(f"cannot resume from {state}: {first_line(err)}") from None
            return
        while (state := runs.latest_state(self.out)) is not None:
            try:
                self._load_state(state)
                return
            except Exception as err:
                acc.print(f"warning: state {state} does not load ({first_line(err)}); set aside")
                acc.wait_for_everyone()
                if acc.is_main_process:
                    os.replace(state, state.with_name(f"damaged-{state.name}"))
                acc.wait_for_everyone()
        if any(p.name.startswith("damaged-") for p in (self.out / runs.STATE).glob("*")):
            raise TranslateError(
                f"no usable state in {self.out / runs.STATE} (the damaged ones are set aside); "
                "use a new train.output_dir to start again"
            )

    def _save_ema(self, models, weights, output_dir: str) -> None:
        """accelerate's save-state hook: the EMA weights as ``ema/``, a diffusers folder."""
        if self.accelerator.is_main_process:
            self.ema.save_pretrained(str(Path(output_dir) / "ema"))

    def _load_ema(self, models, input_dir: str) -> None:
        """accelerate's load-state hook: the EMA weights from ``ema/``."""
        folder = Path(input_dir) / "ema"
        config = UNet2DModel.load_config(folder)  # the UNet's and the EMA's fields together
        with quiet_diffusers():  # EMA fields in config.json are not UNet arguments
            shadow = UNet2DModel.from_pretrained(folder)
        # the EMA's own fields (decay, optimization_step, ...) as its state_dict names them
        state = {key: config[key] for key in self.ema.state_dict() if key in config}
        self.ema.load_state_dict(
            {**state, "shadow_params": [p.detach() for p in shadow.parameters()]}
        )
        self.ema.to(self.accelerator.device)

    def _load_state(self, state: Path) -> None:
        acc = self.accelerator
        acc.load_state(str(state))  # with the EMA (_load_ema)
        if self.adversary is not None:
            self.adversary.load(state / "adversarial")
        if self.content is not None:
            self.content.load(state / "content")
        trainer_state = json.loads((state / "trainer_state.json").read_text())
        gens = state / f"generators_{acc.process_index}.safetensors"
        if gens.is_file():
            streams = load_file(str(gens))
            written_on = trainer_state.get("device", acc.device.type)
            if written_on != acc.device.type:  # a CUDA generator's state does not fit a CPU one
                streams = {k: v for k, v in streams.items() if k not in Generators.ON_DEVICE}
                acc.print(
                    f"note: {state} was written on {written_on}; resuming on "
                    f"{acc.device.type} with fresh random streams for t, noise and roll-outs, "
                    f"so the rest of the run differs from one on {written_on}"
                )
            self.gens.restore(streams)
        self.step = trainer_state["step"]
        acc.print(f"resumed from {state} at step {self.step}")

    # ---------------------------------------------------------------------- sample grid
    def _sample_sources(self) -> list[tuple[str, list[Image.Image], torch.Tensor]]:
        """(direction, source images, their latents) for a fixed, evenly spaced test selection.

        The same images make the sample grids and the examples stored in each checkpoint.
        """
        if self._samples is None:
            count, data = self.cfg.sample.count, self.data
            test_a, test_b = data.source.split("test")
            self._samples = []
            for direction, encoded, files in (
                ("a2b", data.test_a, test_a),
                ("b2a", data.test_b, test_b),
            ):
                pick = torch.linspace(0, len(encoded.names) - 1, min(count, len(encoded.names)))
                index = pick.round().long().unique().tolist()
                sources = [
                    resize_center_crop(load_rgb(f), self.cfg.data.resolution, data.source.crop)
                    for f in _names_to_files(files, [encoded.names[i] for i in index])
                ]
                self._samples.append((direction, sources, encoded.latents[index]))
        return self._samples

    def _sample_grid(self) -> None:
        """Fixed test images A -> B and B -> A with the EMA weights, saved as one PNG."""
        if not self.accelerator.is_main_process:
            return
        translator = self.translator()
        rows = []
        for direction, sources, latents in self._sample_sources():
            solution = translator.translate_latents(
                latents, direction, self.cfg.sample.steps_of(direction), self.cfg.sample.method
            )
            rows += [sources, translator.decode(solution.x)]
        names = (self.data.source.name_a, self.data.source.name_b)
        weights = [translator.default_guidance(d) for d in ("a2b", "b2a")]
        shares = [translator.guidance_until(d) for d in ("a2b", "b2a")]
        image = grid(rows, labels=sample_labels(*names, *weights, *shares))
        path = self.out / "samples" / f"{runs.step_name('step', self.step)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        if self.cfg.train.log_with == "tensorboard":
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)  # a SummaryWriter
            writer.add_image("samples", np.asarray(image), self.step, dataformats="HWC")


def sample_labels(
    name_a: str,
    name_b: str,
    a2b: float = 1.0,
    b2a: float = 1.0,
    a2b_until: float = 1.0,
    b2a_until: float = 1.0,
) -> list[str]:
    """The row labels of a sample grid: sources and translations of each direction; a
    translation row says its autoguidance weight when it is not 1 (once a guide is kept), and
    the share of the path it guides when that is not all of it."""
    labels = [f"source\n{name_a}", f"{name_a}\n-> {name_b}", f"source\n{name_b}"]
    labels.append(f"{name_b}\n-> {name_a}")
    for row, weight, until in ((1, a2b, a2b_until), (3, b2a, b2a_until)):
        if weight != 1:
            labels[row] += f"\nguided {weight:g}" + (f" on {until:.0%}" if until < 1 else "")
    return labels


@dataclass(frozen=True)
class Rollout:
    """Rolled-out states: ``per_domain`` rows from A sources, then as many from B sources."""

    x: torch.Tensor  # (2 * per_domain, C, h, w)
    t: torch.Tensor  # (2 * per_domain,), their times
    per_domain: int
    sources: torch.Tensor  # (2 * per_domain, C, h, w): the clean latents they started from
    condition: SourceCondition | None = None  # their clean sources, for a conditioned field


class JointField:
    """v(x, t) of the UNet that also evaluates a ``Rollout``'s states, and the identity term's
    rows (``translate.flow.identity_rows``), in the same forward pass.

    One forward per backward keeps DistributedDataParallel's gradient reduction correct; the
    rolled-out states' velocities are kept in ``extra_velocity`` and the identity rows' in
    ``identity_velocity`` (batch order preserved).
    """

    def __init__(
        self,
        unet,
        rollout: Rollout | None = None,
        join: bool = True,
        condition: SourceCondition | None = None,
        identity: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        if identity is not None and condition is not None:
            raise ValueError("the identity rows need an unconditioned field (no condition)")
        self.unet, self.rollout = unet, rollout  # the step's rolled-out states, if any
        self.join = join and rollout is not None  # evaluate them in the same pass
        self.condition = condition  # of the regression's rows, for a conditioned field
        self.identity = identity  # (x, t) of the identity rows; an unconditioned field only
        self.extra_velocity: torch.Tensor | None = None
        self.identity_velocity: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.join and self.identity is None:
            return velocity(self.unet, x, t, self.condition)
        xs, ts, condition = [x], [t], self.condition
        if self.join:
            xs.append(self.rollout.x)
            ts.append(self.rollout.t)
            condition = None if condition is None else condition.cat(self.rollout.condition)
        if self.identity is not None:
            xs.append(self.identity[0])
            ts.append(self.identity[1])
        v = velocity(self.unet, torch.cat(xs), torch.cat(ts), condition)
        n, m = len(x), len(self.rollout.x) if self.join else 0
        if self.join:
            self.extra_velocity = v[n : n + m]
        if self.identity is not None:
            self.identity_velocity = v[n + m :]
        return v[:n]


@dataclass
class AdversarialStep:
    """One step's adversarial term: lambda, the predicted endpoints and the losses."""

    weight: float  # lambda on the generator loss (0 while only the discriminators train)
    fake: Views  # predicted endpoints as each discriminator judges them: latents or images
    weights: Endpoints | None  # per-sample weights of the endpoints (adversarial.weighting)
    generator: torch.Tensor | None  # the generator loss; None while weight is 0
    # the weighted content terms (nce_weight, transport_weight, colour_weight), before the ramp;
    # None: off
    content: torch.Tensor | None = None
    discriminator: DiscriminatorLoss | None = None  # set after the discriminators' update

    def log(self) -> dict[str, float]:
        values = {"adv_weight": self.weight}
        if self.generator is not None:
            values["adv_generator"] = self.generator.item()
        if self.content is not None:
            values["content"] = self.content.item()
        if self.discriminator is not None:
            values["adv_discriminator"] = self.discriminator.logistic.item()
            values["adv_r1"] = self.discriminator.r1.item()
        return values


def _names_to_files(files: list[Path], names: list[str]) -> list[Path]:
    """Map LatentSet names ('folder/file') back to the source files."""
    by_name = {f"{f.parent.name}/{f.name}": f for f in files}
    return [by_name[n] for n in names]


def _check_same_run(out: Path, cfg: Config) -> None:
    """Refuse to resume a run folder that was started with a different model or data."""
    saved = out / "config.yaml"
    if not saved.is_file() or runs.latest_state(out) is None:
        return
    from omegaconf import OmegaConf

    before = to_dict(config_from_dict(OmegaConf.to_container(OmegaConf.load(saved))))
    now = to_dict(cfg)
    changed = [
        f"{section}.{key}"
        for section in ("data", "vae", "flow", "model", "adversarial", "reflow")
        for key in now[section]
        if before[section].get(key) != now[section][key]
    ]
    if changed:
        raise TranslateError(
            f"{out} holds a run with a different config ({', '.join(changed)}); "
            "use a new train.output_dir or restore those values"
        )


def _flat(values: dict, prefix: str = "") -> dict:
    """Nested config -> flat {"a.b": scalar} for tracker hyperparameters."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
