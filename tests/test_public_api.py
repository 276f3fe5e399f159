"""Meta-tests on the public API (scikit-learn's test_import_all_consistency habit)."""

import importlib
import inspect

import pytest

import robustlab

PACKAGES = [
    "robustlab.attacks", "robustlab.bench", "robustlab.certify", "robustlab.conformal", "robustlab.data",
    "robustlab.defences", "robustlab.evaluate", "robustlab.losses", "robustlab.losses.functional",
    "robustlab.metrics", "robustlab.models", "robustlab.noise", "robustlab.shift", "robustlab.testing",
    "robustlab.training", "robustlab.training.objectives",
]


@pytest.mark.parametrize("modname", PACKAGES)
def test_all_names_exist_and_are_documented(modname):
    mod = importlib.import_module(modname)
    assert mod.__doc__, f"{modname} has no module docstring"
    names = getattr(mod, "__all__", None)
    assert names, f"{modname} defines no __all__"
    undocumented = []
    for name in names:
        assert hasattr(mod, name), f"{modname}.__all__ lists '{name}', which does not exist"
        obj = getattr(mod, name)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
            undocumented.append(name)
    assert not undocumented, f"undocumented public names in {modname}: {undocumented}"


def test_top_level_lazy_subpackages():
    for name in robustlab.__all__:
        if name != "__version__":
            assert importlib.import_module(f"robustlab.{name}") is getattr(robustlab, name)


@pytest.mark.parametrize("registry_path", [
    ("robustlab.data", "DATASETS"), ("robustlab.noise", "NOISES"), ("robustlab.models", "MODELS"),
    ("robustlab.losses", "LOSSES"), ("robustlab.attacks", "ATTACKS"),
    ("robustlab.training.objectives", "OBJECTIVES"), ("robustlab.shift", "CORRUPTIONS"),
    ("robustlab.conformal", "SCORES"),
])
def test_every_registered_item_has_a_reference_and_a_doc(registry_path):
    mod, attr = registry_path
    reg = getattr(importlib.import_module(mod), attr)
    assert len(reg) > 0
    for spec in reg.specs():
        assert spec.doc, f"{reg.kind} '{spec.name}' has no docstring"
        assert spec.reference, f"{reg.kind} '{spec.name}' has no paper/reference"
        assert spec.name == spec.name.lower() and " " not in spec.name
