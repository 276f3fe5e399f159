import os
import resource

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


@pytest.fixture
def capped_memory():
    """Cap the address space at 3 GiB so a memory bomb fails the test instead of the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="session")
def trained_digits_mlp():
    """An MLP (32) trained 8 epochs on digits, in eval mode, with the full data set: ``(model, data)``."""
    from robustlab import data, models, training

    d = data.load("digits")
    torch.manual_seed(0)
    m = models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(32,))
    training.fit(m, d, epochs=8, batch_size=64, lr=0.1, progress=False, seed=0)
    return m.eval(), d
