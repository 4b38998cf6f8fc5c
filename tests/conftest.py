"""Shared fixtures. Data from ``../shared`` is optional: tests using it skip with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakehub import fake_hub  # noqa: F401  (fixture: a loopback Hugging Face Hub, see tests/fakehub.py)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DEV_IMAGES = SHARED / "data" / "dev-images"
SHARED_MODELS = SHARED / "models"
EXAMPLES = REPO / "examples"


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})


@pytest.fixture(scope="session")
def dev_images_dir() -> Path:
    """The 37 shared dev photos; skips when ``../shared/data/dev-images`` is absent."""
    if not DEV_IMAGES.is_dir():
        pytest.skip(f"dev images not found at {DEV_IMAGES} (the shared/ folder is not beside the repo)")
    return DEV_IMAGES


@pytest.fixture(scope="session")
def dev_images(dev_images_dir: Path) -> list[Path]:
    """Paths of every dev photo, sorted by name."""
    return _image_files(dev_images_dir)


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """The real UltraFace detector folder; skips when ``../shared/models`` is absent."""
    if not (SHARED_MODELS / "version-RFB-320.onnx").is_file():
        pytest.skip(f"real model files not found at {SHARED_MODELS} (the shared/ folder is not beside the repo)")
    return SHARED_MODELS
