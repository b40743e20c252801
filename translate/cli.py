"""Command-line entry points; the only place that parses arguments."""

from __future__ import annotations

import argparse
import sys

from translate.errors import TranslateError  # heavy imports stay inside the commands

# what translate-eval imports beyond an inference install (the `eval` extra)
EVAL_MODULES = ("torchmetrics", "torch_fidelity", "sklearn", "matplotlib")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except empty ones (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def train_main(argv: list[str] | None = None) -> int:
    """``accelerate launch train.py [--config FILE] [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train an OT-CFM image translator (A <-> B) in a VAE latent space.",
        epilog="Example: accelerate launch train.py --config configs/default.yaml train.steps=500",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--config", help="YAML config file (default: the built-in emoji default)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    try:
        from translate.config import load_config
        from translate.train import main

        main(load_config(args.config, args.overrides))
    except TranslateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    return 0


def convert_main(argv: list[str] | None = None) -> int:
    """``translate-folder CHECKPOINT INPUT OUTPUT [options]``; exit 0 ok, 1 failures, 2 usage."""
    from translate.convert import FORMATS, SIZES
    from translate.pipeline import DIRECTIONS, VAE_DTYPES
    from translate.solvers import METHODS

    parser = argparse.ArgumentParser(
        prog="translate-folder",
        description="Translate every image in a folder (recursively) with a trained checkpoint.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("checkpoint", help="checkpoint folder (e.g. runs/emoji/checkpoint-final)")
    parser.add_argument("input", help="an image file or a folder")
    parser.add_argument("output", help="output folder; the input's tree is mirrored inside")
    parser.add_argument(
        "--direction", default="a2b", choices=DIRECTIONS, help="a2b: A -> B; b2a: B -> A"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="ODE steps (default: the checkpoint's own for the direction, "
        "sample.<direction>_steps or sample.steps)",
    )
    parser.add_argument(
        "--method",
        default=None,
        choices=METHODS,
        help="ODE solver; dopri5 adapts its own steps (default: the checkpoint's sample.method)",
    )
    parser.add_argument("--strength", type=float, default=1.0, help="0-1: how far to translate")
    parser.add_argument(
        "--seed", type=int, default=0, help="source noise of a source-noised model (others: none)"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="autoguidance weight; 1: the field alone (default: the checkpoint's guidance.a2b "
        "or guidance.b2a)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call")
    parser.add_argument(
        "--size",
        default="native",
        choices=SIZES,
        help="native: keep each input's size; model: square output",
    )
    parser.add_argument(
        "--format", default="same", choices=FORMATS, help="output format; same: the input's"
    )
    parser.add_argument("--quality", type=int, default=95, help="jpg/webp quality")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    parser.add_argument("--dry-run", action="store_true", help="list what would be done")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--vae-dtype",
        default="auto",
        choices=("auto", *VAE_DTYPES),
        help="dtype of VAE encode/decode (auto: bfloat16 on a GPU that has it, else float32)",
    )
    args = parser.parse_args(argv)
    try:
        return _convert(args)
    except TranslateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to finish", file=sys.stderr)
        return 130


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from translate import convert

    opts = convert.ConvertOptions(
        direction=args.direction,
        steps=args.steps,
        method=args.method,
        strength=args.strength,
        seed=args.seed,
        guidance=args.guidance,
        batch_size=args.batch_size,
        size=args.size,
        format=args.format,
        quality=args.quality,
        overwrite=args.overwrite,
    )
    return convert.convert_folder(
        args.checkpoint,
        Path(args.input),
        Path(args.output),
        opts,
        device=args.device,
        vae_dtype=args.vae_dtype,
        dry_run=args.dry_run,
    )


def _eval_parser() -> argparse.ArgumentParser:
    from translate.pipeline import DIRECTIONS
    from translate.solvers import METHODS

    parser = argparse.ArgumentParser(
        prog="translate-eval",
        description="Evaluate checkpoints: realism, faithfulness, domain success, paired ground "
        "truth, straightness and speed against NFE, with identity and nearest-neighbour "
        "baselines, in one report.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("checkpoint", help="checkpoint folder; its data config is evaluated")
    parser.add_argument("--compare", nargs="*", default=[], help="more checkpoints, same table")
    parser.add_argument("--data-config", help="YAML whose data: section replaces the stored one")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="data split")
    parser.add_argument(
        "--direction", default="both", choices=(*DIRECTIONS, "both"), help="directions to evaluate"
    )
    parser.add_argument("--steps", default="1,2,4,8,16,32", help="comma-separated step counts")
    parser.add_argument(
        "--method",
        nargs="+",
        default=["euler"],
        choices=METHODS,
        help="ODE solvers",
    )
    parser.add_argument("--limit", type=int, help="source images per direction (evenly spaced)")
    parser.add_argument("--out", default=None, help="output folder (default: eval/<model>)")
    parser.add_argument("--inception-weights", help="local Inception-v3 weights: real FID/KID")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of subsets and of a source-noised model's noise"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="autoguidance weight for every checkpoint; 1: the field alone "
        "(default: each checkpoint's own)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return parser


def eval_main(argv: list[str] | None = None) -> int:
    """``translate-eval CHECKPOINT [options]``: metrics, report, plots and grids."""
    from translate.pipeline import DIRECTIONS

    args = _eval_parser().parse_args(argv)
    try:
        from pathlib import Path

        from translate.errors import require

        require(EVAL_MODULES, "translate-eval", "eval")
        from translate.config import load_config
        from translate.evaluate import EvalOptions, evaluate, label_of
        from translate.report import classifier_warning, vae_note, write_report

        try:
            steps = tuple(int(s) for s in args.steps.split(","))
        except ValueError:
            raise TranslateError(
                f"--steps must be comma-separated integers, got {args.steps}"
            ) from None
        checkpoints = [Path(args.checkpoint), *map(Path, args.compare)]
        out = Path(args.out or Path("eval") / label_of(checkpoints[0]))
        opts = EvalOptions(
            out=out,
            split=args.split,
            directions=DIRECTIONS if args.direction == "both" else (args.direction,),
            steps=steps,
            methods=tuple(args.method),
            limit=args.limit,
            inception_weights=args.inception_weights,
            batch_size=args.batch_size,
            seed=args.seed,
            guidance=args.guidance,
            device=args.device,
        )
        data = load_config(args.data_config).data if args.data_config else None
        outcome = evaluate(checkpoints, opts, data)
        command = "translate-eval " + " ".join(sys.argv[1:] if argv is None else argv)
        files = write_report(outcome, out, command)
        print(f"wrote {files['report']} ({len(outcome.rows)} rows)")
        for warning in (vae_note(outcome.meta), classifier_warning(outcome.meta)):
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
    except TranslateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
