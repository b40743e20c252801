"""Command-line entry points; the only place that parses arguments."""

from __future__ import annotations

import argparse
import sys

from translate.errors import TranslateError


def train_main(argv: list[str] | None = None) -> int:
    """``accelerate launch train.py [--config FILE] [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train an OT-CFM image translator (A <-> B) in a VAE latent space.",
        epilog="Example: accelerate launch train.py --config configs/default.yaml train.steps=500",
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
