"""Write an evaluation's files: ``metrics.json``, ``report.md``, plots and example grids."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from translate.evaluate import TRUSTED_RECOGNITION, Outcome, Row
from translate.images import grid, to_pil
from translate.pipeline import span_text

# (key, column title, format, higher is better?)
COLUMNS = [
    ("fd", "{realism}-FD ↓", "{:.3f}", False),
    ("kid", "KID ↓", "{:.4f}", False),
    ("ssim", "SSIM src ↑", "{:.3f}", True),
    ("psnr", "PSNR src", "{:.2f}", True),
    ("l2", "L2 src", "{:.4f}", False),
    ("success", "success ↑", "{:.1%}", True),
    ("gt_ssim", "GT SSIM ↑", "{:.3f}", True),
    ("gt_psnr", "GT PSNR ↑", "{:.2f}", True),
    ("gt_l1", "GT L1 ↓", "{:.4f}", False),
    ("top1", "top-1 ↑", "{:.1%}", True),
    ("top5", "top-5 ↑", "{:.1%}", True),
    ("gt_delta_e", "GT ΔE ↓", "{:.2f}", False),
    ("skin_delta_e", "toned ΔE ↓", "{:.2f}", False),
    ("skin_lightness", "toned ΔL*", "{:+.2f}", False),
    ("tone_kept", "tone kept ↑", "{:.1%}", True),
    ("tone_delta_e", "tone ΔE ↓", "{:.2f}", False),
    ("tone_lightness", "tone ΔL* →0", "{:+.2f}", False),
    ("sharpness", "sharpness →1", "{:.3f}", True),
    ("memorisation", "memorisation →1", "{:.3f}", True),
    ("straightness", "straightness ↓", "{:.4f}", False),
    ("images_per_s", "img/s", "{:.1f}", True),
]
TONE_NOTE = (
    "- skin tone (emoji with one skin-tone modifier whose source shows its skin; not the "
    "`toned` columns): the translation's skin colour where the source shows its skin, against "
    "the target set's colour of the same tone (each set's five colours read from its images); "
    "`tone kept` is the share whose nearest target tone is the right one (a translation whose "
    "skin is not found counts as lost), `tone ΔE` the CIE76 distance to that colour and "
    "`tone ΔL*` the lightness difference (negative = darker), both over the skins found; the "
    "true counterparts, through the codec in the `VAE reconstruction` row, do not reach 100 %: "
    "the two sets draw a figure in slightly different places"
)
PLOTS = [("fd", "realism: {realism}-FD ↓"), ("ssim", "faithfulness: SSIM to source ↑"),
         ("success", "domain success ↑"), ("top1", "paired retrieval top-1 ↑"),
         ("sharpness", "sharpness (1 = real targets)")]  # fmt: skip


def write_report(outcome: Outcome, out: Path, command: str = "") -> dict[str, Path]:
    """Write every file of an evaluation into ``out``; returns {kind: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics": _write_json(outcome, out / "metrics.json", command),
        "report": out / "report.md",
    }
    for direction in dict.fromkeys(r.direction for r in outcome.rows):
        files[f"plot-{direction}"] = _plot(outcome, direction, out / f"plot-{direction}.png")
    for key, columns in outcome.grids.items():
        name = "grid-" + key.replace("/", "-").replace(" ", "_") + ".png"
        files[f"grid:{key}"] = _grid(columns, out / name)
    (out / "report.md").write_text(_markdown(outcome, files, command))
    return files


def _write_json(outcome: Outcome, path: Path, command: str) -> Path:
    """Strict JSON: a non-finite number (the identity's PSNR is infinite) is written as null."""
    rows = [asdict(r) for r in outcome.rows]
    for row in rows:
        row["scores"] = {k: _finite(v) for k, v in row["scores"].items()}
    payload = {"command": command, **outcome.meta, "rows": rows}
    path.write_text(json.dumps(payload, indent=2, allow_nan=False))
    return path


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _realism(outcome: Outcome) -> str:
    return "latent" if outcome.meta["realism"].startswith("latent") else "Inception"


def _markdown(outcome: Outcome, files: dict[str, Path], command: str) -> str:
    meta = outcome.meta
    realism = _realism(outcome)
    a, b = meta["domains"]
    fingerprints = meta.get("vae_fingerprints") or []
    judge = f", VAE `{fingerprints[0]}`" if fingerprints else ""
    lines = [
        f"# Evaluation: {a} ↔ {b}",
        "",
        f"- checkpoints: {', '.join(f'`{c}`' for c in meta['checkpoints'])}",
        f"- split `{meta['split']}`: {meta['images']['a']} {a} and {meta['images']['b']} {b} "
        f"images at {meta['resolution']} px",
        f"- realism: {meta['realism']}"
        + (
            f" on the first checkpoint's VAE latents (pooled{judge}), **not FID**"
            if realism == "latent"
            else ""
        ),
        f"- domain classifier (a small CNN on pixels, trained on the real training images"
        f"{_judge_data(meta)}), accuracy on the real images of split `{meta['split']}`: "
        f"{meta['classifier_accuracy']:.1%}" + _recognition(meta),
        "- `src` columns compare the translation with its source (faithfulness); `GT` columns "
        "with the true counterpart (same file name in the other domain); top-k: the counterpart "
        f"is among the k nearest real targets to the translation (the distance between "
        f"pooled latents of the first checkpoint's VAE{judge}; latent scores compare only "
        "between reports judged by the same VAE)",
        "- KID is the unbiased estimator: it can fall below 0 when two sets are as alike as two "
        "samples of one distribution, so a small negative value means 'indistinguishable'",
        "- sharpness: the share of spectral power above a quarter of Nyquist, over that of the "
        "real targets (1 = as sharp; below 1 blurrier, above 1 noisier); memorisation: the median "
        "distance to the nearest training target over that of real held-out targets (well below "
        "1 = copies of training images)",
        "- colour: `GT ΔE` is the mean CIE76 colour difference to the true counterpart; the "
        "`toned` columns take only the emoji with a skin-tone modifier (U+1F3FB–U+1F3FF), and "
        "`toned ΔL*` is their mean lightness shift over the counterpart's whole figure "
        "(negative = darker; skin, clothes and outlines together)",
        "- ceilings: `VAE reconstruction` is the real targets through the codec, `latent mix` "
        "the decoded midpoint of two real targets' latents (an average of partners looks so)",
        "- straightness is left out at 1 NFE (a single Euler step is straight by construction); "
        "dopri5 rows give the mean NFE it took",
    ]
    lines[-2:-2] = tone_note(outcome.rows)  # after the colour line, before the ceilings
    arrows = {"a2b": "A→B", "b2a": "B→A"}
    guided = []
    spans = meta.get("guidance_until") or [{}] * len(meta["labels"])
    for label, weights, until in zip(meta["labels"], meta.get("guidance", []), spans, strict=False):
        for direction, weight in weights.items():
            if weight != 1:
                span = span_text(until.get(direction, 1.0))
                guided.append(f"`{label}` {arrows[direction]} {weight:g}{span}")
    if guided:
        lines.append(
            f"- autoguidance weight: {', '.join(guided)}; a guided step runs two UNets "
            "(the field and its guide)"
        )
    mixed = vae_note(meta)
    if mixed:
        lines.append(f"- **{mixed}**")
    warning = classifier_warning(meta)
    if warning:
        lines.append(f"- **{warning}**")
    if any(math.isnan(r.scores.get("fd", 0.0)) for r in outcome.rows):
        lines.append("- realism (FD, KID) not computed: it needs at least two images per set")
    if command:
        lines += ["", "```", command, "```"]
    for direction in dict.fromkeys(r.direction for r in outcome.rows):
        lines += _direction_section(outcome, files, direction, realism)
    return "\n".join(lines) + "\n"


def tone_note(rows: list[Row]) -> list[str]:
    """``[TONE_NOTE]`` when any row has skin-tone scores (emoji with skin-tone modifiers),
    else ``[]``: a report on other images does not explain columns it lacks."""
    return [TONE_NOTE] if any("tone_kept" in r.scores for r in rows) else []


def _recognition(meta: dict) -> str:
    """`` (A 99.5 %, B 98.7 %)``: the share of each domain's real images the classifier
    assigns to that domain, or "" for metrics written before it was recorded."""
    recognised = meta.get("classifier_recognised") or {}
    if set(recognised) != {"a", "b"}:
        return ""
    a, b = meta["domains"]
    return f" ({a} {recognised['a']:.1%}, {b} {recognised['b']:.1%})"


def vae_note(meta: dict) -> str | None:
    """One line naming each checkpoint's VAE when the compared checkpoints do not share one
    (by ``LatentCodec.fingerprint``); else None."""
    fingerprints = meta.get("vae_fingerprints") or []
    if len(set(fingerprints)) < 2:
        return None
    named = ", ".join(
        f"`{label}` `{fp}`" for label, fp in zip(meta["labels"], fingerprints, strict=True)
    )
    scores = "latent-FD, latent-KID and top-k" if meta["realism"].startswith("latent") else "top-k"
    return (
        f"the checkpoints have different VAEs ({named}): {scores} of every row are judged "
        "in the first one's latents, so they differ from the same checkpoint's scores in a "
        "report of its own"
    )


def _judge_data(meta: dict) -> str:
    """``; for this data.disjoint run, the whole training split: …``: said when the classifier
    learned from the source's whole training split and the run from part of it."""
    judged, run = meta.get("classifier_train_images"), meta.get("training_images")
    if not meta.get("classifier_whole_split") or not judged or not run:
        return ""
    a, b = meta["domains"]
    return (
        f"; for this `data.disjoint` run, the whole training split: {judged['a']} {a} and "
        f"{judged['b']} {b} images, where the run trained on {run['a']} and {run['b']}"
    )


def classifier_warning(meta: dict) -> str | None:
    """One line saying that domain success cannot be trusted, when the classifier recognises
    less than ``TRUSTED_RECOGNITION`` of one domain's real images; else None."""
    recognised = meta.get("classifier_recognised") or {}
    trained = meta.get("classifier_train_images") or {}
    weak = [k for k in ("a", "b") if recognised.get(k, 1.0) < TRUSTED_RECOGNITION]
    if not weak:
        return None
    names = dict(zip(("a", "b"), meta["domains"], strict=True))
    worst = min(weak, key=lambda k: recognised[k])
    count = f" from {trained[worst]} training images" if worst in trained else ""
    return (
        f"domain success is unreliable here: the classifier recognises only "
        f"{recognised[worst]:.1%} of the real {names[worst]} images{count} "
        f"(trusted from {TRUSTED_RECOGNITION:.0%}); read it against the `VAE reconstruction` row"
    )


def _direction_section(
    outcome: Outcome, files: dict[str, Path], direction: str, realism: str
) -> list[str]:
    """One direction's table, its plot and its grids, as markdown lines."""
    a, b = outcome.meta["domains"]
    rows = [r for r in outcome.rows if r.direction == direction]
    keys = [c for c in COLUMNS if any(c[0] in r.scores for r in rows)]
    title = f"{a} → {b}" if direction == "a2b" else f"{b} → {a}"
    lines = ["", f"## {title} (`{direction}`)", ""]
    header = ["model", "solver", "steps", "NFE"]
    header += [title_.format(realism=realism) for _, title_, _, _ in keys]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.model, r.method or "–", str(r.steps or "–"), _nfe(r)]
        cells += [_cell(r.scores.get(k), fmt) for k, _, fmt, _ in keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![metrics against NFE](plot-{direction}.png)"]
    for key in outcome.grids:
        if f"/{direction}/" in key:
            name = files[f"grid:{key}"].name
            columns = " | ".join(outcome.grid_columns[key])
            lines += ["", f"`{key}`: {columns}", "", f"![{key}]({name})"]
    return lines


def _nfe(r: Row) -> str:
    if not r.method:
        return "–"
    return str(int(r.nfe)) if float(r.nfe).is_integer() else f"{r.nfe:.1f}"


def _cell(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return fmt.format(value)


def _plot(outcome: Outcome, direction: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    realism = _realism(outcome)
    rows = [r for r in outcome.rows if r.direction == direction]
    plots = [
        (k, t) for k, t in PLOTS if any(math.isfinite(r.scores.get(k, math.nan)) for r in rows)
    ]
    fig, axes = plt.subplots(1, len(plots), figsize=(4.2 * len(plots), 3.4), squeeze=False)
    for ax, (key, title) in zip(axes[0], plots, strict=True):
        for model, method in dict.fromkeys((r.model, r.method) for r in rows if r.method):
            line = [r for r in rows if (r.model, r.method) == (model, method)]
            ax.plot(
                [r.nfe for r in line],
                [r.scores[key] for r in line],
                "o-",
                label=f"{model} ({method})",
            )
        styles = ("k--", "k:", "k-.", "k-")
        for r, style in zip((r for r in rows if not r.method), styles, strict=False):
            ax.axhline(r.scores[key], color="gray", linestyle=style[1:], label=r.model)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_title(title.format(realism=realism), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(direction)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(columns: list, path: Path) -> Path:
    """Columns of image batches (n, 3, R, R) -> one PNG with a row per example."""
    as_images = [to_pil(c.float().clamp(-1, 1)) for c in columns]
    rows = [list(row) for row in zip(*as_images, strict=True)]
    grid(rows).save(path)
    return path
