"""Probe: does a prior of the target domain (SDEdit) clean up a checkpoint's translations?

    python benchmarks/target_prior.py --checkpoint runs/emoji/checkpoint-final \
        --steps 600 --prior runs/exp-prior --variants 0.9:2,0.75:2,0.75:4,0.6:4 \
        --nfe 4 --out eval/exp-prior

A generative flow of each domain's latents is trained from Gaussian noise, one UNet for both
domains with the domain as its class label (rectified flow, Liu et al., ICLR 2023):

    y_s = s * z + (1 - s) * eps,   s ~ U[s_min, 1],   loss = |v(y_s, s, domain) - (z - eps)|^2

where z is a training latent of the domain divided by the latents' std (so eps is at the
latents' scale) and s = 1 is the data (this prior's own time, not the translation's). It only
learns the low-noise part of the path (``--s-min``), the part a refinement needs.

A translation is then refined as SDEdit does (Meng et al., ICLR 2022): the checkpoint's
translation z' in ``--nfe`` Euler steps is re-noised to y_s = s * z' + (1 - s) * eps and carried
to s = 1 by the target domain's prior in k Euler steps; a variant ``s:k`` names both, and its
NFE is ``--nfe`` + k. The refined translations are scored by ``translate.evaluate`` on the
held-out split, next to the unrefined checkpoint, as ``translate-eval --compare`` would. The
noise eps is drawn from ``--seed`` for each batch of the evaluation alike, and a refined row's
straightness is that of its unrefined translation. A prior saved in ``--prior`` (with
``prior.json``, its training record) is reused by a rerun with the same training settings.
Hypothesis and result: docs/SHARPNESS.md ("A prior of the target domain").
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import add_guidance_option, guidance_used, machine, write_json
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

import translate.evaluate as evaluate_module
from translate import Translator
from translate.config import config_from_dict
from translate.data import open_source
from translate.evaluate import EvalOptions, evaluate, load_images
from translate.precision import native_bf16_cpu
from translate.report import write_report

# the settings a saved prior was trained with (``prior.json``): a rerun reuses it only if equal
PRIOR_ARGS = ("steps", "batch", "lr", "width", "s_min", "seed")


def build_prior(channels: int, size: int, width: int) -> UNet2DModel:
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=32,
        norm_num_groups=32,
        num_class_embeds=2,  # 0: domain A, 1: domain B
    )


def prior_velocity(unet, y: torch.Tensor, s: torch.Tensor, domain: int) -> torch.Tensor:
    labels = torch.full((y.shape[0],), domain, dtype=torch.long)
    return unet(y, (s * 1000).float().expand(y.shape[0]), class_labels=labels).sample


def train_prior(latents: dict[int, torch.Tensor], args) -> tuple[UNet2DModel, float, list]:
    """Train on {domain: (n, C, h, w)} latents; (EMA prior, latent std, log rows)."""
    torch.manual_seed(args.seed)
    every = torch.cat(list(latents.values()))
    std = float(every.std())
    _, channels, size, _ = every.shape
    unet = build_prior(channels, size, args.width)
    ema = EMAModel(unet.parameters(), decay=0.999)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 50))
    gen = torch.Generator().manual_seed(args.seed)
    bf16 = native_bf16_cpu()
    rows, start = [], time.perf_counter()
    for step in range(args.steps):
        domains = torch.randint(2, (args.batch,), generator=gen)
        z = (
            torch.stack(
                [
                    latents[int(d)][torch.randint(len(latents[int(d)]), (1,), generator=gen)][0]
                    for d in domains
                ]
            )
            / std
        )
        eps = torch.randn(z.shape, generator=gen)
        s = args.s_min + (1 - args.s_min) * torch.rand(len(z), generator=gen)
        y = s.view(-1, 1, 1, 1) * z + (1 - s.view(-1, 1, 1, 1)) * eps
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            v = unet(y, s * 1000, class_labels=domains).sample
        loss = F.mse_loss(v.float(), z - eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(unet.parameters())
        if step % 50 == 0 or step == args.steps - 1:
            rows.append({"step": step, "loss": loss.item(), "s": time.perf_counter() - start})
            print(f"prior step {step} loss {loss.item():.4f}", file=sys.stderr)
    ema.copy_to(unet.parameters())
    return unet.eval(), std, rows


def refined(tr: Translator, prior, std: float, s0: float, k: int, seed: int) -> Translator:
    """A shallow copy of ``tr`` whose translations are refined by the target domain's prior."""
    out = copy.copy(tr)
    plain = tr.translate_latents

    @torch.no_grad()
    def translate_latents(latents, direction="a2b", steps=None, *args, **kwargs):
        solution = plain(latents, direction, steps, *args, **kwargs)
        domain = 1 if direction == "a2b" else 0
        gen = torch.Generator().manual_seed(seed)
        eps = torch.randn(solution.x.shape, generator=gen)
        y = s0 * solution.x.cpu() / std + (1 - s0) * eps
        times = torch.linspace(s0, 1.0, k + 1)
        for i in range(k):
            s = times[i].expand(1)
            y = y + (times[i + 1] - times[i]) * prior_velocity(prior, y, s, domain).float()
        return dataclasses.replace(solution, x=(y * std).to(solution.x), nfe=solution.nfe + k)

    out.translate_latents = translate_latents
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--prior", type=Path, required=True, help="where the prior is saved")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--s-min", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="0.9:2,0.75:2,0.75:4,0.6:4", help="s:k,...")
    parser.add_argument("--nfe", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True, help="the evaluation's folder")
    parser.add_argument("--data-root", help="the data's folder (default: the checkpoint's)")
    add_guidance_option(parser)
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    tr = Translator.from_pretrained(args.checkpoint, device="cpu")
    guidance_used(tr, args.guidance)  # a weight the checkpoint cannot use fails before training
    data = config_from_dict(tr.info.config).data
    if args.data_root:
        data = dataclasses.replace(data, source="folders", root=args.data_root)
    source = open_source(data)
    latents = {}
    with torch.no_grad():
        for domain, files in enumerate(source.split("train")):
            pixels = load_images(files, tr.resolution, source.crop).pixels
            latents[domain] = torch.cat([tr.codec.encode(c) for c in pixels.split(64)])
    prior_file, record = args.prior / "prior", args.prior / "prior.json"
    trained_with = {k: str(getattr(args, k)) for k in PRIOR_ARGS}
    if (prior_file / "config.json").exists():  # a prior trained before, with these settings
        stored = json.loads(record.read_text())["trained_with"] if record.exists() else None
        if stored != trained_with:
            sys.exit(f"error: {prior_file} was trained with {stored}, not {trained_with}")
        prior = UNet2DModel.from_pretrained(prior_file).eval()
        std = float(torch.cat(list(latents.values())).std())
        print(f"reusing the prior in {prior_file}")
    else:
        start = time.perf_counter()
        prior, std, log = train_prior(latents, args)
        prior.save_pretrained(prior_file)
        train_s = time.perf_counter() - start
        write_json(
            record,
            {
                "machine": machine(torch.device("cpu")),
                "train_seconds": train_s,
                "log": log,
                "trained_with": trained_with,
            },
        )
        print(f"prior trained in {train_s:.0f} s")
    variants = [(float(a), int(b)) for a, b in (v.split(":") for v in args.variants.split(","))]
    models = {"plain": tr}
    for s0, k in variants:
        models[f"prior-s{s0}-k{k}"] = refined(tr, prior, std, s0, k, args.seed)
    evaluate_module._load_translators = lambda checkpoints, device: list(models.values())
    opts = EvalOptions(
        out=args.out, steps=(args.nfe,), limit=args.limit, device="cpu", guidance=args.guidance
    )
    outcome = evaluate([Path(name) for name in models], opts, data)
    files = write_report(outcome, args.out, "benchmarks/target_prior.py " + " ".join(sys.argv[1:]))
    print(f"wrote {files['report']}")


if __name__ == "__main__":
    main()
