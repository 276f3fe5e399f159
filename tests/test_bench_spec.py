"""Spec validation, grid expansion (exclude/include/when) and run-id hashing."""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest

from robustlab.bench import SPECS, SpecError, canonical_json, expand, load_spec, run_id


def base_spec(**over):
    spec = {
        "name": "t",
        "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "num_classes": 3, "dim": 4}],
        "noise": ["none", "symmetric:0.2"],
        "models": ["linear"],
        "losses": ["ce", {"name": "gce", "q": 0.5}],
        "seeds": [0, 1],
        "train": {"epochs": 1, "batch_size": 32},
        "evaluations": ["clean"],
    }
    spec.update(over)
    return spec


def test_expand_is_the_full_product_with_unique_stable_ids():
    runs = expand(base_spec())
    assert len(runs) == 1 * 2 * 1 * 2 * 1 * 2
    combos = {(r.labels["noise"], r.labels["loss"], r.labels["seed"]) for r in runs}
    assert combos == set(itertools.product(["none", "symmetric:0.2"], ["ce", "gce"], [0, 1]))
    assert len({r.id for r in runs}) == len(runs)
    assert [r.id for r in expand(base_spec())] == [r.id for r in runs]  # deterministic


def test_run_id_is_sha256_of_canonical_config_and_ignores_execution_details():
    r = expand(base_spec())[0]
    independent = hashlib.sha256(json.dumps(r.config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert r.id == run_id(r.config) == independent
    # the spec name, labels, key order and run options do not change the id
    other = base_spec(name="other", run={"timeout_s": 5})
    other["data"] = [{"dim": 4, "num_classes": 3, "n_test": 30, "n_train": 60, "name": "gaussians", "label": "g"}]
    assert {x.id for x in expand(other)} == {x.id for x in expand(base_spec())}
    # any change of the experiment changes it; an int written for a float parameter does not
    assert expand(base_spec(train={"epochs": 2, "batch_size": 32}))[0].id != r.id
    s1 = base_spec(losses=[{"name": "gce", "q": 1}])
    s2 = base_spec(losses=[{"name": "gce", "q": 1.0}])
    assert expand(s1)[0].id == expand(s2)[0].id
    assert canonical_json({"b": 1, "a": [1.5]}) == '{"a":[1.5],"b":1}'


def test_defaults_are_resolved_into_the_config():
    r = expand(base_spec())[0]
    assert r.config["train"]["optimizer"] == "sgd" and r.config["train"]["lr"] == 0.1
    topk = expand(base_spec(evaluations=["topk"]))[0].config["evaluations"]
    assert topk == [{"name": "topk", "k": [1, 5]}]


def test_explicit_defaults_normalize_to_the_same_run_id():
    # review fix: 'gce' and {name: gce, q: 0.7} (its default) are the same experiment and must share an id,
    # otherwise a resumed sweep re-runs it and the report shows it twice
    data_default = [{"name": "gaussians", "n_train": 60, "n_test": 30, "dim": 4}]
    data_explicit = [{"name": "gaussians", "n_train": 60, "n_test": 30, "dim": 4, "num_classes": 3}]  # 3 = default
    a = expand(base_spec(data=data_default, losses=["gce"], models=["mlp"], objectives=["trades"]))
    b = expand(base_spec(data=data_explicit, losses=[{"name": "gce", "q": 0.7}],
                         models=[{"name": "mlp", "hidden": [256, 256]}], objectives=[{"name": "trades", "beta": 6}]))
    assert [r.id for r in a] == [r.id for r in b]
    assert a[0].config["loss"]["kwargs"] == {} and a[0].config["objective"]["kwargs"] == {}
    assert a[0].config["data"]["options"] == {"dim": 4}
    # a non-default value still changes it
    c = expand(base_spec(losses=[{"name": "gce", "q": 0.5}]))
    assert c[0].config["loss"]["kwargs"] == {"q": 0.5}
    assert expand(base_spec(losses=["gce"]))[0].id != c[0].id


def test_same_evaluation_twice_with_disjoint_when_rules():
    spec = base_spec(evaluations=[{"name": "topk", "k": [1], "when": {"loss": "ce"}},
                                  {"name": "topk", "k": [2], "when": {"loss": "gce"}}])
    for r in expand(spec):
        assert r.config["evaluations"] == [{"name": "topk", "k": [1] if r.labels["loss"] == "ce" else [2]}]


def test_exclude_include_and_when_rules():
    spec = base_spec(
        objectives=["standard", {"name": "gaussian_aug", "sigma": 0.1}],
        exclude=[{"objective": "gaussian_aug"}, {"noise": "symmetric", "loss": "gce"}],
        include=[{"objective": "gaussian_aug", "loss": "ce", "noise": "none"}],
        evaluations=["clean", {"name": "topk", "k": [2], "when": {"loss": "gce"}}],
    )
    runs = expand(spec)
    keys = {(r.labels["noise"], r.labels["loss"], r.labels["objective"]) for r in runs}
    assert keys == {("none", "ce", "standard"), ("none", "gce", "standard"), ("symmetric:0.2", "ce", "standard"),
                    ("none", "ce", "gaussian_aug")}
    assert len(runs) == 4 * 2
    for r in runs:
        names = [e["name"] for e in r.config["evaluations"]]
        assert names == (["clean", "topk"] if r.labels["loss"] == "gce" else ["clean"])


@pytest.mark.parametrize("mutate, match", [
    (lambda s: s.update(modles=["linear"]), r"unknown key 'modles'.*Did you mean 'models'"),
    (lambda s: s.update(losses=["gcee"]), r"losses\[0\].*Unknown loss 'gcee'.*Did you mean 'gce'"),
    (lambda s: s.update(models=["mlpp"]), r"Did you mean 'mlp'"),
    (lambda s: s.update(losses=[{"name": "gce", "qq": 0.5}]), r"unknown parameter 'qq'.*Did you mean 'q'"),
    (lambda s: s.update(losses=[{"name": "gce", "q": 5.0}]), r"losses\[0\]"),
    (lambda s: s.update(noise=["symmetric:1.5"]), r"noise\[0\].*rate.*\[0, 1\)"),
    (lambda s: s.update(noise=["symetric:0.2"]), r"Did you mean 'symmetric'"),
    (lambda s: s.update(seeds=[0, "1"]), r"seeds\[1\].*non-negative int"),
    (lambda s: s.update(train={"epochs": "ten"}), r"train\.epochs.*an int"),
    (lambda s: s.update(train={"epoch": 3}), r"unknown key 'epoch'.*Did you mean 'epochs'"),
    (lambda s: s.update(evaluations=["clen"]), r"Unknown evaluation 'clen'.*Did you mean 'clean'"),
    (lambda s: s.update(evaluations=[{"name": "topk", "kk": 1}]), r"unknown parameter 'kk'"),
    (lambda s: s.update(evaluations=[{"name": "topk", "k": [0]}]), r"'k' parameter of evaluation 'topk' must be .*an int in \[1, inf\)"),
    (lambda s: s.update(exclude=[{"los": "ce"}]), r"unknown axis 'los'.*Did you mean 'loss'"),
    (lambda s: s.update(exclude=[{"loss": "mae"}]), r"loss 'mae' is not in the spec's loss axis"),
    (lambda s: s.update(losses=["ce", "ce"]), r"duplicate label"),
    (lambda s: s.update(evaluations=["clean", {"name": "clean", "when": {"loss": "ce"}}]),
     r"evaluations\[1\].*already appears as evaluations\[0\].*disjoint"),
    (lambda s: s.pop("data"), r"'data' key is required"),
    (lambda s: s.update(data=[{"name": "gaussians", "n_train": -1}]), r"n_train.*positive int"),
    (lambda s: s.update(data=[{"name": "gaussians", "dimm": 3}]), r"unknown parameter 'dimm'.*Did you mean 'dim'"),
])
def test_validation_errors_are_clear(mutate, match):
    spec = base_spec()
    mutate(spec)
    with pytest.raises(SpecError, match=match):
        load_spec(spec)


def test_evaluation_needing_a_missing_module_is_a_validation_error(monkeypatch):
    from robustlab.bench import evaluations

    cls = evaluations.EVALUATIONS.spec("certify_ibp").factory
    monkeypatch.setattr(cls, "requires", ("robustlab._no_such_module",))
    with pytest.raises(SpecError, match=r"evaluation 'certify_ibp' needs robustlab._no_such_module, which is not available"):
        load_spec(base_spec(evaluations=[{"name": "certify_ibp"}]))


def test_unknown_spec_name_and_file(tmp_path):
    with pytest.raises(SpecError, match=r"Did you mean 'quick'"):
        load_spec("quik")
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(str(bad))


def test_shipped_specs_validate_and_expand():
    assert {"quick", "paper-ldr"} <= set(SPECS.available())
    quick = expand("quick")
    axes = {a: {r.labels[a] for r in quick} for a in ("data", "noise", "loss", "objective")}
    assert axes["data"] == {"digits", "mnist1d"}
    assert {"none", "symmetric:0.4", "asymmetric:0.3"} <= axes["noise"]
    assert "aldr_kl" in axes["loss"] and {"pgd_at", "trades"} & axes["objective"]
    evals = {e["name"] for r in quick for e in r.config["evaluations"]}
    assert evals == {"clean", "topk", "memorization", "attacks", "certify_ibp", "certify_smoothing", "conformal",
                     "corruptions"}
    assert len(expand("paper-ldr")) > len(quick)


def test_cli_expand_prints_one_id_per_line(capsys):
    from robustlab.cli import main

    assert main(["bench", "expand", "quick"]) == 0
    lines = capsys.readouterr().out.split()
    assert lines == [r.id for r in expand("quick")]
    assert main(["bench", "expand", "quik"]) == 2
    assert "Did you mean 'quick'" in capsys.readouterr().err


def test_model_normalize_from_data_is_validated_and_applied():
    from robustlab.bench._worker import execute_run
    from robustlab.bench.spec import SpecError

    runs = expand(base_spec(models=[{"name": "mlp", "hidden": [8], "normalize": "data"}], noise=["none"], seeds=[0]))
    assert runs[0].config["model"]["kwargs"]["normalize"] == "data"
    res = execute_run(runs[0].config, threads=1)
    assert res["status"] == "completed", res.get("error")
    with pytest.raises(SpecError, match="normalize"):
        load_spec(base_spec(models=[{"name": "mlp", "normalize": "zscore"}]))
