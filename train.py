"""Entry point: ``accelerate launch train.py [--config configs/X.yaml] [key=value ...]``."""

import sys

from translate.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
