"""Give a checkpoint without a guide one: autoguidance for runs trained before it existed.

    python benchmarks/attach_guide.py runs/emoji/checkpoint-final runs/emoji/checkpoint-000600 \
        --a2b 2 --b2a 2 --b2a-until 0.5 --to runs/exp-ag/checkpoint-final

The guide is the UNet of an earlier checkpoint of the same run (for the default recipe the
exported ``checkpoint-000600``, the field before its reflow round: what training now keeps by
itself, ``guidance.at``). The copy written to ``--to`` translates with
v = v_guide + w * (v - v_guide) (Karras et al., NeurIPS 2024, Eq. 1, on velocities), w the
direction's weight, on the share of each direction's path from its source that ``--a2b-until``
and ``--b2a-until`` give (1: the whole path; the checkpoint's own shares are replaced);
``translate-eval --guidance W`` then measures any other weight. The source
checkpoints are not changed. Hypothesis and result: docs/SHARPNESS.md ("Autoguidance").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from translate import Translator
from translate.errors import TranslateError


def attach(
    checkpoint: Path,
    guide: Path,
    to: Path,
    a2b: float,
    b2a: float,
    a2b_until: float = 1.0,
    b2a_until: float = 1.0,
) -> Translator:
    """The checkpoint with ``guide``'s UNet as its guide, saved to ``to``.

    Raises TranslateError when the two UNets differ in architecture, both weights are 1
    (nothing to guide), a weight is outside [0, 10] or a share outside (0, 1]."""
    if a2b == b2a == 1:
        raise TranslateError("both weights are 1: the copy would never use its guide")
    main = Translator.from_pretrained(checkpoint, device="cpu", vae_dtype="float32")
    weak = Translator.from_pretrained(guide, device="cpu", vae_dtype="float32")
    shares = {d: u for d, u in (("a2b", a2b_until), ("b2a", b2a_until)) if u != 1}
    info = dataclasses.replace(main.info, guidance={"a2b": a2b, "b2a": b2a}, guidance_until=shares)
    if info.problem():
        raise TranslateError(info.problem())
    guided = Translator(main.unet, main.codec, info, "cpu", main.examples, weak.unet)
    guided.save_pretrained(to)
    return guided


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the checkpoint to guide")
    parser.add_argument("guide", type=Path, help="an earlier checkpoint of the same run")
    parser.add_argument("--a2b", type=float, default=2.0, help="A -> B weight (1: unguided)")
    parser.add_argument("--b2a", type=float, default=1.0, help="B -> A weight (1: unguided)")
    parser.add_argument("--a2b-until", type=float, default=1.0, help="guided share of A -> B")
    parser.add_argument("--b2a-until", type=float, default=1.0, help="guided share of B -> A")
    parser.add_argument("--to", type=Path, required=True, help="where to write the copy")
    args = parser.parse_args(argv)
    try:
        attach(
            args.checkpoint, args.guide, args.to, args.a2b, args.b2a, args.a2b_until, args.b2a_until
        )
    except TranslateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
