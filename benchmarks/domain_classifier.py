"""Can the domain classifier tell the two domains apart? Linear probes against the small CNN.

    python benchmarks/domain_classifier.py runs/emoji/checkpoint-final \
        --data .cache/translate/emoji-om17.0.0-tw2.0.0-v2 --nfe 4

Each classifier is trained on the real training images of ``<data>/trainA`` and ``trainB`` and
scored, as the share assigned to the right domain, on: the real test images of each domain, the
same through the checkpoint's VAE (encode, decode), and the checkpoint's translations of the
other domain's test images in ``--nfe`` Euler steps (domain success). Classifiers:

- ``linear probe, latents 8x8``: logistic regression on VAE latents average-pooled to 8 x 8,
  the domain classifier of ``translate-eval`` before the CNN;
- ``linear probe, latents``: the same on the unpooled latents;
- ``linear probe, pixels 32x32``: logistic regression on pixels average-pooled to 32 x 32;
- ``CNN, seed s``: ``translate.metrics.DomainClassifier``, today's, once per ``--seeds``.

``--failures PNG`` also writes the translations that the first CNN rejects, each after its
source (ten pairs to a row, B→A first). A classifier that scores real held-out images at 91 %
cannot tell a 95 % domain success from its own errors. Result and reading: docs/SHARPNESS.md
§1 ("Which classifier judges the domain").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import add_guidance_option, guidance_used, table, write_json

from translate import Translator
from translate.autoencoder import _as_float, _load_pixels
from translate.images import grid, to_pil
from translate.metrics import DomainClassifier


def _images(folder: Path, resolution: int) -> torch.Tensor:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return _as_float(_load_pixels(files, resolution, None, folder.name))


def _linear_probe(features, train_a, train_b):
    from sklearn.linear_model import LogisticRegression

    fa, fb = features(train_a), features(train_b)
    x = torch.cat([fa, fb]).double().numpy()
    y = np.r_[np.zeros(len(fa)), np.ones(len(fb))]
    model = LogisticRegression(C=1.0, max_iter=3000).fit(x, y)
    return lambda images: torch.from_numpy(model.predict(features(images).double().numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="folder with trainA/B and testA/B")
    parser.add_argument("--nfe", type=int, default=4)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--failures", help="PNG of the translations the first CNN rejects")
    add_guidance_option(parser)
    parser.add_argument("--out", default="benchmarks/results/domain_classifier.json")
    args = parser.parse_args()

    tr = Translator.from_pretrained(args.checkpoint, device="cpu")
    guidance = guidance_used(tr, args.guidance)
    data, res = Path(args.data), tr.resolution
    train_a, train_b = _images(data / "trainA", res), _images(data / "trainB", res)
    test_a, test_b = _images(data / "testA", res), _images(data / "testB", res)

    def chunked(fn, x):
        return torch.cat([fn(c) for c in x.split(256)])

    with torch.no_grad():
        encode = lambda x: chunked(tr.codec.encode, x)  # noqa: E731
        recon = lambda x: chunked(lambda c: tr.codec.decode(tr.codec.encode(c)), x)  # noqa: E731

        def translate(x, direction):
            def one(c):
                return tr.codec.decode(
                    tr.translate_latents(
                        tr.codec.encode(c), direction, args.nfe, "euler", guidance=args.guidance
                    ).x
                )

            return chunked(one, x)

        translated = {"a2b": translate(test_a, "a2b"), "b2a": translate(test_b, "b2a")}
        sets = {  # name: (images, label: 0 = domain A, 1 = domain B)
            "real A": (test_a, 0),
            "real B": (test_b, 1),
            "VAE A": (recon(test_a), 0),
            "VAE B": (recon(test_b), 1),
            f"A→B {args.nfe} NFE": (translated["a2b"], 1),
            f"B→A {args.nfe} NFE": (translated["b2a"], 0),
        }
        probes = {
            "linear probe, latents 8x8": lambda x: F.adaptive_avg_pool2d(encode(x), 8).flatten(1),
            "linear probe, latents": lambda x: encode(x).flatten(1),
            "linear probe, pixels 32x32": lambda x: F.adaptive_avg_pool2d(x, 32).flatten(1),
        }
        predictors = {}  # name: (predict, seconds to train)
        for name, features in probes.items():
            start = time.perf_counter()
            predict = _linear_probe(features, train_a, train_b)
            predictors[name] = (predict, time.perf_counter() - start)
    cnns = []
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        cnns.append(DomainClassifier.fit(train_a, train_b, seed=seed))
        predict = lambda x, c=cnns[-1]: (c.prob_b(x) >= 0.5).long()  # noqa: E731
        predictors[f"CNN, seed {seed}"] = (predict, time.perf_counter() - start)
    if args.failures and cnns:
        tiles = []
        for direction, sources in (("b2a", test_b), ("a2b", test_a)):
            images = translated[direction]
            rejected = (~cnns[0].success(images, direction)).nonzero().flatten()
            for i in rejected.tolist():
                tiles += to_pil(torch.stack([sources[i], images[i]]))
        rows = [tiles[i : i + 20] for i in range(0, len(tiles), 20)]
        if rows:
            rows[-1] += [to_pil(torch.ones(1, 3, res, res))[0]] * (20 - len(rows[-1]))
            grid(rows).save(args.failures)

    rows = []
    for name, (predict, seconds) in predictors.items():
        with torch.no_grad():
            row = {"classifier": name}
            for set_name, (images, label) in sets.items():
                row[set_name] = float((predict(images) == label).float().mean())
        row["training s"] = round(seconds, 1)
        rows.append(row)
    print(f"{len(train_a)} + {len(train_b)} training, {len(test_a)} + {len(test_b)} test images")
    print(table(rows, ["classifier", *sets, "training s"]))
    record = {"checkpoint": args.checkpoint, "nfe": args.nfe, "guidance": guidance, "rows": rows}
    write_json(args.out, record)


if __name__ == "__main__":
    main()
