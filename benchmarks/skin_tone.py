"""Which skin tones a translation keeps, tone by tone (``translate.skin_tone``).

    python benchmarks/skin_tone.py runs/emoji/checkpoint-final [CHECKPOINT ...] \
        --data .cache/translate/emoji-om17.0.0-tw2.0.0-v2 --split test

For the emoji of ``<split>A`` and ``<split>B`` whose file names carry one skin-tone modifier
(U+1F3FB..U+1F3FF), at the model resolution: each set's five skin colours
(``skin_tone.palette``), then per checkpoint and direction the translations of every source in
the checkpoint's own step count (``--a2b-steps`` / ``--b2a-steps`` override it) and
autoguidance weight (``--guidance``), scored by ``skin_tone.tone_scores``. Two reference rows
per direction: ``identity`` (the untranslated source) and ``counterpart`` (the real image of
the same name in the target domain, when every source has one). Per tone: the share whose skin
keeps its tone and the mean lightness difference ΔL* to the target set's colour of that tone
(negative: darker); over all: the share kept and the mean CIE76 ΔE. Result and reading:
docs/SHARPNESS.md ("The skin tone itself").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import add_guidance_option, guidance_used, table, write_json

from translate import Translator
from translate.evaluate import label_of, load_images
from translate.skin_tone import SKIN_TONES, palette, tone_of, tone_scores

TONE_NAMES = ("light", "medium-light", "medium", "medium-dark", "dark")


def score_row(label: str, direction: str, translations, sources, palettes) -> dict:
    """One table row: kept share and mean ΔL* per tone; kept share and mean ΔE over all.
    ``palettes``: the source and the target set's colours, (5, 3) each."""
    scores = tone_scores(translations, sources.pixels, sources.names, *palettes)
    row = {"model": label, "direction": direction, "measured": len(scores.index)}
    for tone, name in enumerate(TONE_NAMES):
        rows = scores.tone == tone
        row[f"{name} kept"] = scores.kept[rows].float().mean().item() if rows.any() else None
        row[f"{name} ΔL*"] = scores.lightness[rows].nanmean().item() if rows.any() else None
    row["kept"] = scores.kept.float().mean().item() if len(scores.index) else None
    row["ΔE"] = scores.delta_e.nanmean().item() if len(scores.index) else None
    return row


def translate_all(tr: Translator, pixels, direction: str, steps: int, guidance, batch: int):
    """Pixels (n, 3, R, R) in [-1, 1] -> their translations, in batches."""
    outs = []
    for chunk in pixels.split(batch):
        latents = tr.codec.encode(chunk.to(tr.device))
        solution = tr.translate_latents(latents, direction, steps, guidance=guidance)
        outs.append(tr.codec.decode(solution.x).float().clamp(-1, 1).cpu())
    return torch.cat(outs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", required=True, help="folder with <split>A and <split>B")
    parser.add_argument("--split", default="test")
    parser.add_argument("--a2b-steps", type=int, default=None)
    parser.add_argument("--b2a-steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64)
    add_guidance_option(parser)
    parser.add_argument("--out", default="benchmarks/results/skin_tone.json")
    args = parser.parse_args()

    # each checkpoint loaded once, its guidance checked before any work
    models = [
        (label_of(Path(p)), Translator.from_pretrained(p, device="cpu")) for p in args.checkpoints
    ]
    used = [guidance_used(tr, args.guidance) for _, tr in models]
    first = models[0][1]
    sets = {}
    for domain in "AB":
        files = sorted((Path(args.data) / f"{args.split}{domain}").glob("*.png"))
        files = [f for f in files if tone_of(f.stem) is not None]
        images = load_images(files, first.resolution, None)
        images.names = [Path(n).stem for n in images.names]
        sets[domain] = images
    colours = {d: palette(s.pixels, s.names) for d, s in sets.items()}
    if any(c is None for c in colours.values()):
        raise SystemExit("too few emoji of some skin tone to read a set's skin colours")
    rows, settings = [], {}
    for direction, (src, tgt) in (("a2b", "AB"), ("b2a", "BA")):
        sources, palettes = sets[src], (colours[src], colours[tgt])
        rows.append(score_row("identity", direction, sources.pixels, sources, palettes))
        by_name = {n: i for i, n in enumerate(sets[tgt].names)}
        if all(n in by_name for n in sources.names):
            truth = sets[tgt].pixels[[by_name[n] for n in sources.names]]
            rows.append(score_row("counterpart", direction, truth, sources, palettes))
        for (label, tr), guidance in zip(models, used, strict=True):
            steps = getattr(args, f"{direction}_steps") or tr.default_steps(direction)
            out = translate_all(tr, sources.pixels, direction, steps, args.guidance, args.batch)
            rows.append(score_row(label, direction, out, sources, palettes))
            settings[f"{label} {direction}"] = {"steps": steps, **guidance[direction]}
    columns = ["model", "direction", "measured", "kept", "ΔE"]
    columns += [f"{name} {k}" for name in TONE_NAMES for k in ("kept", "ΔL*")]
    print(table(rows, columns))
    palettes = {d: c.tolist() for d, c in colours.items()}
    write_json(
        args.out,
        {"modifiers": SKIN_TONES, "palettes": palettes, "settings": settings, "rows": rows},
    )


if __name__ == "__main__":
    main()
