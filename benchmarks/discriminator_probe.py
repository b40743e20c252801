"""Probe: can a patch discriminator tell a checkpoint's A->B translations from real B images?

    python benchmarks/discriminator_probe.py --checkpoint runs/emoji/checkpoint-final \
        --data .cache/translate/emoji-om17.0.0-tw2.0.0-v2 --names OpenMoji,Twemoji \
        --probes latents:300:0.05,pixels:300:0.05,latents:1000:0,pixels:1000:0,pixels:1000:0.05

``--count`` training images of each domain (evenly spaced) are encoded; the A latents are
translated A->B in ``--nfe`` Euler steps. Real: the B latents, or their decoded images (so that
the codec's own blur is on both sides); fake: the translations, or their decoded images. Each
probe ``space:steps:r1_gamma`` trains a fresh discriminator of the adversarial term
(``translate.adversarial``: ``PatchDiscriminator`` on latents, ``PixelPatchDiscriminator`` on
images; width ``--width``, AdamW ``--lr``, batch 32, non-saturating logistic loss plus R1) on
all but the last ``--held-out`` of each set, and reports its accuracy on those (the sign of the mean
patch logit; 0.5 = chance) and its logistic loss there (chance: 2 ln 2 = 1.386). Result and
reading: docs/SHARPNESS.md ("Can a discriminator see the blur?").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import add_guidance_option, guidance_used, machine, table, write_json

from translate import Translator
from translate.adversarial import PatchDiscriminator, PixelPatchDiscriminator
from translate.autoencoder import _as_float, _load_pixels
from translate.data import folder_source


def probe(disc, real, fake, steps: int, r1_gamma: float, lr: float, held_out: int) -> dict:
    """Train ``disc`` on real vs fake (all but the last ``held_out``), score it on the rest."""
    train = len(real) - held_out
    optimizer = torch.optim.AdamW(disc.parameters(), lr=lr, betas=(0.5, 0.99), weight_decay=0)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(train, (32,), generator=generator)
        x_real = real[index].clone().requires_grad_(True)
        logits_real, logits_fake = disc(x_real), disc(fake[index])
        (grad,) = torch.autograd.grad(logits_real.sum(), x_real, create_graph=True)
        loss = (
            F.softplus(-logits_real).mean()
            + F.softplus(logits_fake).mean()
            + r1_gamma / 2 * grad.pow(2).flatten(1).sum(1).mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        score_real = disc(real[train:]).flatten(1).mean(1)
        score_fake = disc(fake[train:]).flatten(1).mean(1)
    accuracy = ((score_real > 0).float().mean() + (score_fake < 0).float().mean()) / 2
    logistic = F.softplus(-score_real).mean() + F.softplus(score_fake).mean()
    return {
        "held-out accuracy": accuracy.item(),
        "held-out logistic loss": logistic.item(),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="folder with train<A> and train<B>")
    parser.add_argument("--names", default="A,B", help="the two domain folder names")
    parser.add_argument("--probes", default="latents:300:0.05,pixels:300:0.05")
    parser.add_argument("--count", type=int, default=1200)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--nfe", type=int, default=4)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    add_guidance_option(parser)
    parser.add_argument("--out", default="benchmarks/results/discriminator_probe.json")
    args = parser.parse_args()
    if args.count <= args.held_out:
        raise SystemExit(f"error: --count must exceed --held-out ({args.held_out})")

    torch.manual_seed(0)
    tr = Translator.from_pretrained(args.checkpoint, device="cpu", vae_dtype="float32")
    guidance = guidance_used(tr, args.guidance)
    name_a, name_b = args.names.split(",")
    train_a, train_b = folder_source(Path(args.data), name_a, name_b).split("train")
    sets = {}
    for name, files in (("a", train_a), ("b", train_b)):
        index = torch.linspace(0, len(files) - 1, args.count).long()
        pixels = _load_pixels([files[i] for i in index], tr.resolution, None, f"train {name}")
        with torch.no_grad():
            sets[name] = torch.cat([tr.codec.encode(_as_float(c)) for c in pixels.split(100)])
    with torch.no_grad():
        chunks = sets["a"].split(100)
        fake = torch.cat(
            [
                tr.translate_latents(c, "a2b", args.nfe, "euler", guidance=args.guidance).x
                for c in chunks
            ]
        )
        views = {
            "latents": (sets["b"], fake),
            "pixels": tuple(
                torch.cat([tr.codec.decode(c) for c in z.split(100)]) for z in (sets["b"], fake)
            ),
        }
    rows = []
    for spec in args.probes.split(","):
        space, steps, gamma = spec.split(":")
        torch.manual_seed(1)
        channels = sets["b"].shape[1]
        if space == "latents":
            disc = PatchDiscriminator(channels, args.width)
        else:
            disc = PixelPatchDiscriminator(3, args.width)
        result = probe(disc, *views[space], int(steps), float(gamma), args.lr, args.held_out)
        rows.append({"space": space, "steps": int(steps), "R1 gamma": float(gamma), **result})
        print(table(rows[-1:], list(rows[-1])).splitlines()[-1], flush=True)
    print(table(rows, list(rows[0])))
    payload = {"machine": machine(torch.device("cpu")), "args": vars(args), "rows": rows}
    payload["guidance"] = guidance
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
