"""Training-step speed of a config's UNet on random latents, with a breakdown.

    python benchmarks/train_step.py [--config configs/default.yaml] [--batch N] [--steps 20]

Measures, on the same model and data: the serial step split into data draw, coupling (cost
matrix + OT plan), forward/backward and optimizer; whole loops of serial exact OT, overlapped
exact OT (the trainer's default) and independent pairs (no OT at all). The coupling overhead is
the loop time over the independent loop's, minus one. It also times drawing one A- and one
B-batch from latents held in device memory against latents memory-mapped from a cache file
(``train.latent_storage``). Prints tables; writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import machine, pick_device, sync, table, timed, write_json
from safetensors.torch import save_file

from translate.config import load_config
from translate.coupling import ExactOTCoupler, IndependentCoupler, MinibatchPairs, Pairing
from translate.flow import CFMStep, ProbabilityPath, build_path, cfm_step
from translate.latent_cache import load_latent_file
from translate.latent_sampling import LatentSampler
from translate.model import build_unet, velocity
from translate.prefetch import Generators, PairStream


def flow_step(
    unet,
    pairing: Pairing,
    path: ProbabilityPath,
    generator: torch.Generator,
    time_sampling: str = "uniform",
) -> CFMStep:
    """One CFM regression of the UNet on paired batches, as the trainer's plain step does
    (``translate.flow.cfm_step``)."""
    return cfm_step(
        lambda x, t: velocity(unet, x, t), pairing.x0, pairing.x1, path, generator, time_sampling
    )


def latent_shape(cfg) -> tuple[int, int, int]:
    factor = 4 if cfg.vae.pretrained is None else 8
    return (4, cfg.data.resolution // factor, cfg.data.resolution // factor)


class Setup:
    def __init__(
        self, cfg, batch: int, device: torch.device, pool: int = 2048, latents=None
    ) -> None:
        torch.manual_seed(0)
        self.cfg, self.batch, self.device = cfg, batch, device
        shape = latent_shape(cfg)
        self.unet = build_unet(cfg.model, shape[-1], shape[0]).to(device).train()
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=cfg.train.lr)
        if latents is None:  # random latents: speed does not depend on their values
            g = torch.Generator().manual_seed(1)
            latents = [torch.randn(pool, *shape, generator=g) for _ in range(2)]
        elif tuple(latents[0].shape[1:]) != shape:
            found = tuple(latents[0].shape[1:])
            raise SystemExit(f"error: cached latents are {found}, not {shape}")
        self.latents_a, self.latents_b = (x.to(device) for x in latents)
        self.path = build_path(cfg.flow.objective, cfg.flow.sigma)
        self.shape = shape

    def stream(self, coupler, overlap: bool) -> tuple[PairStream, Generators]:
        gens = Generators.create(0, 0, self.device)
        a, b = LatentSampler(self.latents_a), LatentSampler(self.latents_b)
        return PairStream(MinibatchPairs(a, b, coupler), self.batch, gens, overlap), gens

    def update(self, pairing, gens) -> None:
        loss = flow_step(self.unet, pairing, self.path, gens.path).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def loop_time(setup: Setup, coupler, overlap: bool, steps: int) -> float:
    """Seconds per step of the whole loop (after one warm-up step)."""
    stream, gens = setup.stream(coupler, overlap)
    try:
        setup.update(stream.next(), gens)
        sync(setup.device)
        start = time.perf_counter()
        for _ in range(steps):
            setup.update(stream.next(), gens)
        sync(setup.device)
        return (time.perf_counter() - start) / steps
    finally:
        stream.close()


def breakdown(setup: Setup, steps: int) -> dict[str, float]:
    """Milliseconds per part of the serial exact-OT step."""
    device, coupler = setup.device, ExactOTCoupler(setup.cfg.flow.cost_resolution)
    gens = Generators.create(0, 0, device)
    a, b = LatentSampler(setup.latents_a), LatentSampler(setup.latents_b)
    parts = {"data": 0.0, "coupling": 0.0, "forward+backward": 0.0, "optimizer": 0.0}

    def clock(name, fn):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        parts[name] += time.perf_counter() - start
        return out

    for step in range(steps + 1):
        if step == 1:  # the first step warms up
            parts = dict.fromkeys(parts, 0.0)
        x0, x1 = clock(
            "data", lambda: (a.draw(setup.batch, gens.data), b.draw(setup.batch, gens.data))
        )
        pairing = clock("coupling", lambda x0=x0, x1=x1: coupler(x0, x1, gens.coupling))
        clock(
            "forward+backward",
            lambda p=pairing: flow_step(setup.unet, p, setup.path, gens.path).loss.backward(),
        )

        def opt():
            torch.nn.utils.clip_grad_norm_(setup.unet.parameters(), 1.0)
            setup.optimizer.step()
            setup.optimizer.zero_grad(set_to_none=True)

        clock("optimizer", opt)
    return {k: v / steps * 1e3 for k, v in parts.items()}


def draw_times(setup: Setup, repeats: int) -> dict[str, float]:
    """Milliseconds to draw an A- and a B-batch from device memory and from a memory map."""
    device, times = setup.device, {}
    with tempfile.TemporaryDirectory() as folder:
        stores = {"memory": [], "mmap": []}
        for name, latents in (("a", setup.latents_a), ("b", setup.latents_b)):
            path = Path(folder) / f"{name}.safetensors"
            meta = {"names": "[]", "failures": "[]"}
            save_file({"latents": latents.half().cpu().contiguous()}, str(path), metadata=meta)
            stores["memory"].append(latents.half())
            stores["mmap"].append(load_latent_file(path, mmap=True).latents)
        for storage, (a, b) in stores.items():
            gen = torch.Generator().manual_seed(0)
            samplers = [LatentSampler(x, device) for x in (a, b)]

            def draw(samplers=samplers, gen=gen):
                return [x.draw(setup.batch, gen) for x in samplers]

            times[f"draw ms {storage}"] = timed(draw, device, repeats) * 1e3
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["configs/default.yaml"])
    parser.add_argument("--batch", type=int, help="override train.batch_size (per process)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results/train_step.json")
    args = parser.parse_args()
    device = pick_device(args.device)
    results = []
    for config in args.config:
        cfg = load_config(config)
        batch = args.batch or cfg.train.batch_size
        setup = Setup(cfg, batch, device)
        parts = breakdown(setup, args.steps)
        independent = loop_time(setup, IndependentCoupler(), False, args.steps)
        serial = loop_time(setup, ExactOTCoupler(cfg.flow.cost_resolution), False, args.steps)
        overlapped = loop_time(setup, ExactOTCoupler(cfg.flow.cost_resolution), True, args.steps)
        draws = draw_times(setup, args.steps)
        row = {
            "config": Path(config).name,
            "latent": "x".join(map(str, setup.shape)),
            "batch": batch,
            "UNet params (M)": sum(p.numel() for p in setup.unet.parameters()) / 1e6,
            **{f"{k} ms": v for k, v in parts.items()},
            "coupling share of serial step": parts["coupling"] / sum(parts.values()),
            "steps/s independent": 1 / independent,
            "steps/s exact serial": 1 / serial,
            "steps/s exact overlapped": 1 / overlapped,
            "samples/s exact overlapped": batch / overlapped,
            "OT overhead serial": serial / independent - 1,
            "OT overhead overlapped": overlapped / independent - 1,
            **draws,
        }
        results.append(row)
        print(table([row], list(row)))
    write_json(args.out, {"machine": machine(device), "steps": args.steps, "rows": results})


if __name__ == "__main__":
    main()
