import os

import pytest
import torch

torch.set_num_threads(1)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets")


@pytest.fixture
def shared_datasets() -> str:
    """Path to ../shared/datasets; skips the test when absent (the product never depends on it)."""
    path = os.path.abspath(os.environ.get("ROBUSTLAB_SHARED_DATASETS", SHARED))
    if not os.path.isdir(path):
        pytest.skip(f"shared data sets not found at {path}")
    return path


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
