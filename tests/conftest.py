import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_folders, save_tiny_vae

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


@pytest.fixture
def folders(tmp_path) -> Path:
    return make_folders(tmp_path / "data")


@pytest.fixture
def repo() -> Path:
    return REPO
