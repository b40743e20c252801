"""``python -m translate COMMAND [ARGS]``: the console scripts without their installed wrappers.

COMMAND is ``train`` (translate-train), ``folder`` (translate-folder) or ``eval``
(translate-eval); e.g. ``torchrun --nproc_per_node 2 -m translate folder CKPT IN OUT``.
"""

from __future__ import annotations

import sys

from translate.cli import convert_main, eval_main, train_main

COMMANDS = {"train": train_main, "folder": convert_main, "eval": eval_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m translate {{{','.join(COMMANDS)}}} [ARGS]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
