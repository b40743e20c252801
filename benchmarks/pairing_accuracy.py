"""How often does a pairing cost, or a coupler, pair an image with its true counterpart?

    python benchmarks/pairing_accuracy.py --checkpoint runs/emoji/checkpoint-final \
        --data .cache/translate/emoji-om17.0.0-tw2.0.0-v2 --split test

Needs a paired split: the images of ``<split>A`` and ``<split>B`` (CycleGAN layout) that have
the same file name in both folders, encoded by the checkpoint's VAE. Each cost in ``--costs``
is a squared Euclidean distance between features:

- ``latents[:s]``, ``pixels[:s]`` (pooled to s x s), ``mask:s`` (darkness, pooled);
- ``hist:n``: the colour composition, layout left out: ``translate.colour.colour_histograms``
  of the images (n centres per axis, 12 if not given), as ``flow.colour_weight`` caches them;
  ``dhist:n`` the same of the decoded latents (a variant training does not use);
- ``...-std`` standardised per domain, ``...-white`` whitened per domain (CORAL);
- ``translated-a2b`` |T_AB(a) - b|^2, ``translated-b2a`` |a - T_BA(b)|^2 and ``translated-sum``,
  with the checkpoint's field in ``--nfe`` Euler steps;
- ``x+y*w``: a sum of costs, each divided by its mean over all pairs, ``y``'s weighted by ``w``.

For each cost: the share of A images whose cheapest B is the counterpart, whose partner under
one exact plan over the whole split (``ot.emd``) is, and whose partner under the exact plan of
a batch of ``--batch`` pairs is (``--batches`` random batches). Each coupler in ``--couplers``
(``exact``, ``sinkhorn:reg``, ``unbalanced:tau:reg``: ``translate.coupling``'s own, on the
latent cost) pairs the same batches; reported: the share of its pairs that are counterparts,
their mean cost over the batch's mean cost, and the share of distinct A rows among them.

Where the counterpart is absent, as in unpaired data: each cost's exact plan between an A-batch
and a B-batch drawn from two disjoint halves of the split. Of the A emoji with a skin-tone
modifier (U+1F3FB..U+1F3FF in the file name), reported: the share whose partner carries the same
modifier ("tone kept"; one in five by chance among toned partners), the share whose partner
carries any modifier, and the share whose partner is the same emoji in another tone or untoned.
Result and reading: docs/SHARPNESS.md ("Which cost finds the counterpart?", "Unbalanced plans").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import ot
import torch
import torch.nn.functional as F
from common import add_guidance_option, guidance_used, table, write_json

from translate import Translator
from translate.autoencoder import _as_float, _load_pixels
from translate.colour import colour_histograms
from translate.coupling import ExactOTCoupler, SinkhornCoupler, UnbalancedCoupler, pairwise_cost
from translate.skin_tone import SKIN_TONES


def paired_files(data: Path, split: str) -> tuple[list[Path], list[Path]]:
    """The files of ``split`` present under the same name in both domains, sorted by name."""
    folder_a, folder_b = data / f"{split}A", data / f"{split}B"
    common = sorted({p.name for p in folder_a.iterdir()} & {p.name for p in folder_b.iterdir()})
    if not common:
        raise SystemExit(f"no file name is in both {folder_a} and {folder_b}")
    return [folder_a / n for n in common], [folder_b / n for n in common]


def _pool(x: torch.Tensor, size: int | None) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, size) if size and size < x.shape[-1] else x


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def _whiten(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(0)
    cov = x.T @ x / len(x) + 1e-3 * torch.eye(x.shape[1], dtype=x.dtype)
    values, vectors = torch.linalg.eigh(cov)
    return x @ vectors @ torch.diag(values.clamp_min(1e-8).rsqrt()) @ vectors.T


def features(name: str, pixels, latents, translated, decoded) -> tuple[torch.Tensor, torch.Tensor]:
    """The (A, B) feature rows, flattened, float64, of one ``--costs`` entry."""
    if "+" in name:  # a sum of costs: scale each part's features by sqrt(weight / mean cost)
        parts = []
        for term in name.split("+"):
            term, _, weight = term.partition("*")
            a, b = features(term, pixels, latents, translated, decoded)
            scale = (float(weight or 1) / pairwise_cost(a, b).mean()).sqrt()
            parts.append((a * scale, b * scale))
        return tuple(torch.cat([p[i] for p in parts], 1) for i in (0, 1))
    base, _, size = name.partition(":")
    base, _, transform = base.partition("-")
    size = int(size) if size else None
    if base == "translated":
        (za, zb), (ta, tb) = latents, translated
        pairs = {"a2b": [(ta, zb)], "b2a": [(za, tb)], "sum": [(ta, zb), (za, tb)]}[transform]
        return tuple(torch.cat([p[i].flatten(1) for p in pairs], 1).double() for i in (0, 1))
    if base == "hist":
        return tuple(colour_histograms(x, size or 12).double() for x in pixels)
    if base == "dhist":  # the same of the decoded latents (training reads the images')
        return tuple(colour_histograms(x, size or 12).double() for x in decoded)
    if base == "mask":
        pair = [_pool((1 - x.mean(1, keepdim=True)).clamp_min(0), size) for x in pixels]
    else:
        pair = [_pool(x, size) for x in {"latents": latents, "pixels": pixels}[base]]
    a, b = (x.flatten(1).double() for x in pair)
    if transform:
        normalise = {"std": _standardise, "white": _whiten}[transform]
        a, b = normalise(a), normalise(b)
    return a, b


def cost_row(name, a, b, batches) -> dict:
    cost = pairwise_cost(a, b)
    n = len(cost)
    target = np.arange(n)
    plan = ot.emd(np.full(n, 1 / n), np.full(n, 1 / n), (cost / cost.mean()).numpy(), 10**8)
    per_batch = []
    for index in batches:
        sub = cost[index][:, index].numpy()
        w = np.full(len(index), 1 / len(index))
        per_batch.append((ot.emd(w, w, sub).argmax(1) == np.arange(len(index))).mean())
    return {
        "cost": name,
        "nearest neighbour": float((cost.argmin(1).numpy() == target).mean()),
        "dataset plan": float((plan.argmax(1) == target).mean()),
        "batch plan": float(np.mean(per_batch)),
    }


def _tone(name: str) -> str | None:
    return next((t for t in SKIN_TONES if t in name), None)


def _item(name: str) -> str:
    for tone in SKIN_TONES:
        name = name.replace(f"-{tone}", "")
    return name


def tone_row(name, a, b, names, batches) -> dict:
    """Skin tone and item of the partners under exact plans of batches without counterparts."""
    cost = pairwise_cost(a, b)
    toned = kept = any_tone = sibling = 0
    for index_a, index_b in batches:
        sub = cost[index_a][:, index_b].numpy()
        w = np.full(len(index_a), 1 / len(index_a))
        partner = index_b[ot.emd(w, w, sub).argmax(1)]
        for i, j in zip(index_a, partner, strict=True):
            tone = _tone(names[i])
            if tone is None:
                continue
            toned += 1
            kept += _tone(names[j]) == tone
            any_tone += _tone(names[j]) is not None
            sibling += _item(names[j]) == _item(names[i])
    share = (lambda count: count / toned) if toned else (lambda count: None)
    return {
        "cost": name,
        "toned A rows": toned,
        "tone kept": share(kept),
        "toned partner": share(any_tone),
        "same emoji, other or no tone": share(sibling),
    }


def build(spec: str):
    kind, *values = spec.split(":")
    if kind == "exact":
        return ExactOTCoupler()
    if kind == "sinkhorn":
        return SinkhornCoupler(float(values[0]))
    if kind == "unbalanced":
        return UnbalancedCoupler(float(values[1]), float(values[0]))
    raise SystemExit(f"unknown coupler {spec!r}: exact, sinkhorn:reg, unbalanced:tau:reg")


def coupler_row(spec, latents, batches) -> dict:
    coupler, (za, zb) = build(spec), latents
    hits, costs, distinct = [], [], []
    generator = torch.Generator().manual_seed(0)
    for index in batches:
        x0, x1 = za[index], zb[index]
        cost = pairwise_cost(x0, x1).numpy()
        rows, cols = coupler.match(cost, generator)
        hits.append((rows == cols).mean())
        costs.append(cost[rows, cols].mean() / cost.mean())
        distinct.append(len(set(rows.tolist())) / len(index))
    return {
        "coupler": spec,
        "counterpart pairs": float(np.mean(hits)),
        "paired cost / mean": float(np.mean(costs)),
        "distinct A rows": float(np.mean(distinct)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="folder with <split><A> and <split><B>")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--costs",
        default="latents,latents:8,latents:4,latents:2,pixels,pixels:16,pixels:8,pixels:4,"
        "mask:16,latents-std,pixels-std:16,latents-white,pixels-white:16,"
        "translated-a2b,translated-b2a,translated-sum",
    )
    parser.add_argument(
        "--couplers", default="exact,sinkhorn:0.01,unbalanced:0.95:0.01,unbalanced:0.8:0.01"
    )
    parser.add_argument("--nfe", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20)
    add_guidance_option(parser)
    parser.add_argument("--out", default="benchmarks/results/pairing_accuracy.json")
    args = parser.parse_args()
    torch.manual_seed(0)

    translator = Translator.from_pretrained(args.checkpoint, device="cpu")
    guidance = guidance_used(translator, args.guidance)
    files = paired_files(Path(args.data), args.split)
    pixels = [
        _as_float(_load_pixels(f, translator.resolution, None, f"{args.split} {d}"))
        for f, d in zip(files, "AB", strict=True)
    ]
    if not len(pixels[0]) == len(pixels[1]) == len(files[0]):
        raise SystemExit("an image of the paired split could not be read: the pairs are broken")

    def translate(z: torch.Tensor, direction: str) -> torch.Tensor:
        return translator.translate_latents(
            z, direction, args.nfe, "euler", guidance=args.guidance
        ).x

    def in_chunks(fn, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(x[i : i + 256]) for i in range(0, len(x), 256)])

    with torch.no_grad():
        latents = [in_chunks(translator.codec.encode, x) for x in pixels]
        translated = [
            in_chunks(lambda z, d=d: translate(z, d), z)
            for z, d in zip(latents, ("a2b", "b2a"), strict=True)
        ]
    n = len(latents[0])
    rng = np.random.default_rng(0)
    batches = [rng.choice(n, min(args.batch, n), replace=False) for _ in range(args.batches)]
    decoded = None  # decoded only for a dhist cost
    if "dhist" in args.costs:
        with torch.no_grad():
            decoded = [in_chunks(translator.codec.decode, z) for z in latents]
    feats = {c: features(c, pixels, latents, translated, decoded) for c in args.costs.split(",")}
    cost_rows = [cost_row(c, *pair, batches) for c, pair in feats.items()]
    coupler_rows = [coupler_row(c, latents, batches) for c in args.couplers.split(",")]
    names = [f.name for f in files[0]]
    half = n // 2
    size = min(args.batch, half)
    disjoint = []
    for _ in range(args.batches):
        order = rng.permutation(n)
        disjoint.append((order[:size], order[half : half + size]))
    tone_rows = [tone_row(c, *pair, names, disjoint) for c, pair in feats.items()]
    print(f"{n} pairs of {args.split}, batches of {min(args.batch, n)}")
    print(table(cost_rows, ["cost", "nearest neighbour", "dataset plan", "batch plan"]))
    columns = ["coupler", "counterpart pairs", "paired cost / mean", "distinct A rows"]
    print(table(coupler_rows, columns))
    print(
        f"batches of {size} from disjoint halves (no counterpart present), "
        f"A emoji with a skin-tone modifier:"
    )
    print(table(tone_rows, ["cost", "tone kept", "toned partner", "same emoji, other or no tone"]))
    write_json(
        args.out,
        {
            "pairs": n,
            "guidance": guidance,
            "costs": cost_rows,
            "couplers": coupler_rows,
            "tones": tone_rows,
        },
    )


if __name__ == "__main__":
    main()
