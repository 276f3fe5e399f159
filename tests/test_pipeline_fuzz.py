"""Seeded fuzzing of spec loading and run configs: a malformed spec or config is a clear ValueError, never another
exception and never a silent result (bounded to a few seconds)."""

from __future__ import annotations

import copy
import random

import pytest

from robustlab import pipeline
from robustlab.bench import expand, load_spec
from robustlab.bench.spec import SpecError

BASE = {
    "name": "fuzz",
    "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "dim": 4}],
    "noise": ["none", "symmetric:0.2", {"kind": "asymmetric", "rate": 0.3}],
    "models": [{"name": "mlp", "hidden": [8]}],
    "losses": ["ce", {"name": "gce", "q": 0.5}],
    "objectives": ["standard", {"name": "pgd_at", "eps": 0.1, "steps": 2}],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
    "evaluations": ["clean", {"name": "topk", "k": [1, 2], "when": {"loss": "ce"}}],
    "exclude": [{"loss": "gce", "noise": "none"}],
    "run": {"timeout_s": 60},
}
POOL = [None, -1, 0, 1, 2.5, -0.5, float("nan"), float("inf"), 10**30, True, "", "x", "none", "symmetric:2",
        "mlpp", [], {}, [1, "a"], {"a": 1}, {"name": None}, [[]], "8/255"]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _mutate(spec, rng):
    s = copy.deepcopy(spec)
    paths = [p for p in _paths(s) if p]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        parent = s
        try:
            for key in path[:-1]:
                parent = parent[key]
            if rng.random() < 0.15 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(POOL))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced a parent
    return s


def test_mutated_specs_fail_with_a_spec_error_or_load():
    rng = random.Random(20261201)
    failures = 0
    for _ in range(300):
        s = _mutate(BASE, rng)
        try:
            bs = load_spec(s)
        except SpecError as e:
            failures += 1
            assert str(e) and e.problems, s
            continue
        for rc in expand(bs):  # every grid point the spec accepts is a config the pipeline accepts, unchanged
            assert pipeline.Config.from_dict(rc.config).to_dict() == rc.config
        # any other exception type fails the test with the offending spec in the traceback
    assert failures > 150  # most mutations are invalid; the fuzzer really probes


def test_mutated_yaml_text_fails_with_a_spec_error_or_loads(tmp_path):
    import yaml

    text = yaml.safe_dump(BASE, sort_keys=False)
    rng = random.Random(7)
    p = tmp_path / "s.yaml"
    for _ in range(150):
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars))
            chars[i] = rng.choice(":-[]{}&*!|>'\"#\n x0")
        p.write_text("".join(chars))
        try:
            load_spec(str(p))
        except SpecError as e:
            assert str(e)


@pytest.mark.parametrize("seed", range(3))
def test_mutated_run_configs_fail_with_a_value_error(seed):
    cfg = {"data": {"name": "gaussians", "options": {"dim": 4}, "n_train": 60, "n_test": 30},
           "noise": {"kind": "symmetric", "rate": 0.2, "options": {}}, "model": {"name": "mlp", "kwargs": {}},
           "loss": {"name": "ce", "kwargs": {}}, "objective": {"name": "standard", "kwargs": {}},
           "train": {"epochs": 1}, "evaluations": [], "seed": 0}
    rng = random.Random(seed)
    for _ in range(200):
        c = _mutate(cfg, rng)
        try:
            pipeline.Config.from_dict(c)
        except ValueError as e:  # InvalidParameterError and registry errors are ValueErrors
            assert str(e)
