"""Specs that name data files, the grid check (`bench check`, `bench run`), strict YAML, all problems at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robustlab.bench import expand, load_spec
from robustlab.bench.spec import SpecError, check_spec
from robustlab.cli import main

MNIST = Path("/work/shared/datasets/mnist-t10k")
if not MNIST.is_dir():  # the repository's sibling layout (../shared/datasets/mnist-t10k)
    MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist-t10k"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
                                 reason="shared MNIST test files not present")


def spec(**over):
    s = {"name": "t", "data": [{"name": "gaussians", "n_train": 60, "n_test": 30, "dim": 4}], "models": ["linear"],
         "losses": ["ce"], "train": {"epochs": 1, "batch_size": 32}, "evaluations": ["clean"]}
    s.update(over)
    return s


def write_npz(path: Path, n: int = 80, d: int = 6) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = (rng.random((n, d)) * 0.2 + y[:, None] * 0.3).astype(np.float32)
    np.savez(path, x=x, y=y)
    return path


# -- strict YAML ----------------------------------------------------------------------------------
def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    lol = "name: lol\n" + "".join(
        f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9) if i else ','.join(['lol'] * 9)}]\n" for i in range(9))
    p = tmp_path / "lol.yaml"
    p.write_text(lol)
    assert len(lol.encode()) < 1000  # a small file that would expand to 9**9 strings
    with pytest.raises(SpecError, match=r"anchors \(&l0\) are not allowed.*line 2"):
        load_spec(str(p))


@pytest.mark.parametrize("text, match", [
    ("name: a\nname: b\n", r"key 'name' appears twice"),
    ("name: t\ntrain: {epochs: 1, epochs: 2}\n", r"key 'epochs' appears twice"),
    ("name: t\nx: &a {y: 1}\nz: {<<: *a}\n", r"not allowed"),
])
def test_duplicate_keys_and_merge_keys_are_errors(tmp_path, text, match):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=match):
        load_spec(str(p))


# -- every problem at once ------------------------------------------------------------------------
def test_all_problems_are_listed_at_once():
    bad = spec(losses=["gcee", {"name": "gce", "q": 5.0}], models=["mlpp"], noise=["symetric:0.2"],
               train={"epochs": 0, "lr": -1.0}, evaluations=["clen"], exclude=[{"loss": "gcee"}])
    with pytest.raises(SpecError) as e:
        load_spec(bad)
    problems = e.value.problems
    text = str(e.value)
    assert len(problems) == 7, problems
    for needle in ("Did you mean 'gce'", "losses[1]", "Did you mean 'mlp'", "Did you mean 'symmetric'",
                   "train.epochs", "train.lr", "Did you mean 'clean'"):
        assert needle in text
    assert "7 problems" in text and "exclude" not in text  # a rule naming a broken entry adds no problem


# -- data named by files --------------------------------------------------------------------------
def test_path_forms_and_relative_paths_resolve_from_the_spec_folder(tmp_path):
    write_npz(tmp_path / "d.npz")
    (tmp_path / "s.yaml").write_text(
        "name: files\ndata:\n  - {name: 'npz:d.npz', test_fraction: 0.25}\nmodels: [linear]\nlosses: [ce]\n"
        "noise: [none, 'symmetric:0.2']\ntrain: {epochs: 1, batch_size: 16}\nevaluations: [clean]\n")
    runs = expand(str(tmp_path / "s.yaml"))
    assert runs[0].labels["data"] == "npz:d.npz"
    assert runs[0].config["data"]["name"] == f"npz:{tmp_path / 'd.npz'}"
    assert check_spec(str(tmp_path / "s.yaml")).name == "files"
    from robustlab.bench._worker import execute_run

    res = execute_run(runs[1].config, threads=1)
    assert res["status"] == "completed", res.get("error")
    with pytest.raises(SpecError, match=r"unknown parameter 'test_fractoin'.*Did you mean 'test_fraction'"):
        load_spec(spec(data=[{"name": f"npz:{tmp_path / 'd.npz'}", "test_fractoin": 0.2}]))
    with pytest.raises(SpecError, match="root folder does not apply"):
        load_spec(spec(data=[{"name": f"npz:{tmp_path / 'd.npz'}", "root": "x"}]))


def test_root_is_accepted_and_fetch_options_are_not_part_of_the_run(tmp_path, monkeypatch):
    from robustlab import data

    s = spec(data=[{"name": "gaussians", "root": "sub", "n_train": 60, "n_test": 30, "dim": 4, "download": True}])
    monkeypatch.chdir(tmp_path)
    rc = expand(s)[0]
    assert rc.config["data"]["options"]["root"] == str(tmp_path / "sub")  # a dict spec: from the working dir
    assert "download" not in json.dumps(rc.config)
    plain = spec(data=[{"name": "gaussians", "root": "sub", "n_train": 60, "n_test": 30, "dim": 4}])
    assert expand(plain)[0].id == rc.id  # fetching is not part of the experiment
    seen = []
    real = data.load
    monkeypatch.setattr(data, "load", lambda name, **kw: (seen.append(kw), real(name, **{
        k: v for k, v in kw.items() if k != "download"}))[1])
    check_spec(s)
    assert seen and seen[0].get("download") is True  # the spec's own download reaches the loader
    with pytest.raises(SpecError, match=r"download.*true or false"):
        load_spec(spec(data=[{"name": "gaussians", "download": "yes"}]))


def test_grid_check_lists_every_data_and_model_problem(tmp_path):
    write_npz(tmp_path / "d.npz", n=40)
    bad = spec(data=[{"name": "mnist", "root": str(tmp_path / "empty")},
                     {"name": f"npz:{tmp_path / 'd.npz'}", "n_train": 1000},
                     {"name": f"csv:{tmp_path / 'missing.csv'}"}],
               models=["linear", "lenet"], noise=["none", {"kind": "asymmetric", "rate": 0.2, "dataset": "cifar10"}])
    load_spec(bad)  # the structure is fine ...
    with pytest.raises(SpecError) as e:
        check_spec(bad)  # ... the grid is not
    probs = e.value.problems
    text = " | ".join(probs)
    assert "data[0] (mnist): cannot be loaded" in text
    assert "data[1]" in text and "n_train: asks for 1000" in text
    assert "data[2]" in text and "missing.csv" in text
    assert "noise[1]" in text  # the CIFAR-10 map names class 9; the npz data has 3 classes
    assert "models[1] (lenet)" in text  # an image model on 6 features
    assert len(probs) == 5, probs


def test_cli_bench_check_and_run_refuse_a_bad_grid_before_launching(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(json.dumps(spec()))
    assert main(["bench", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps(spec(data=[{"name": "mnist", "root": str(tmp_path / "nowhere")}],
                                   train={"epochs": 0})))
    assert main(["bench", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "Traceback" not in err
    assert main(["bench", "check", str(bad).replace("bad", "bda")]) == 2
    out = tmp_path / "out"
    bad.write_text(json.dumps(spec(data=[{"name": "mnist", "root": str(tmp_path / "nowhere")}])))
    assert main(["bench", "run", str(bad), "--out", str(out), "--quiet", "--no-progress"]) == 2
    assert "cannot be loaded" in capsys.readouterr().err
    assert not out.exists()  # nothing launched, nothing written


@needs_mnist
def test_mnist_from_the_shared_files(tmp_path):
    s = spec(data=[{"name": "mnist", "root": str(MNIST), "use_test_split_as_train": 0.8, "flatten": True,
                    "n_train": 300, "n_test": 100}], models=[{"name": "mlp", "hidden": [16]}],
             noise=[{"kind": "asymmetric", "rate": 0.3}])
    bs = check_spec(s)
    rc = expand(bs)[0]
    assert rc.config["data"]["options"]["root"] == str(MNIST)
    from robustlab.bench._worker import execute_run

    res = execute_run(rc.config, threads=1)
    assert res["status"] == "completed", res.get("error")
    assert res["resolved"]["noise"]["dataset"] == "mnist"  # the map follows the data set's name
    names = {m[0] for m in res["metrics"]}
    assert "acc/clean" in names and "noise/realized_rate" in names


def test_severity_zero_is_the_identity_everywhere():
    from robustlab import shift

    s = spec(evaluations=[{"name": "corruptions", "corruptions": ["contrast"], "severities": [0, 1], "n_test": 10}])
    assert load_spec(s).evaluations[0][0]["severities"] == [0, 1]
    import torch

    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(shift.corrupt(x, "contrast", severity=0), x)


def test_corruption_mean_leaves_out_the_clean_severity():
    import torch

    from robustlab import data, models
    from robustlab.bench.evaluations import EvalContext, run_evaluation

    d = data.load("digits").subset(n_train=50, n_test=40)
    m = models.create("linear", input_shape=d.input_shape, num_classes=d.num_classes).eval()
    ctx = EvalContext(model=m, data=d, train_labels=d.y_train, is_noisy=None, seed=0)
    ev = {"name": "corruptions", "corruptions": ["contrast"], "severities": [0, 3], "n_test": 40}
    got = {n: v for n, v, _ in run_evaluation(ev, ctx).metrics}
    assert got["corr_acc/mean"] == pytest.approx(got["corr_acc/contrast/3"])
    assert torch.is_tensor(d.x_test)


def test_csv_label_column_goes_in_options(tmp_path):
    rows = ["f1,f2,cls"] + [f"{i % 3 * 0.3:.2f},{(i * 7) % 10 / 10:.2f},{i % 3}" for i in range(60)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    s = spec(data=[{"name": f"csv:{tmp_path / 't.csv'}", "label": "tab", "options": {"label": "cls"}}])
    rc = expand(check_spec(s))[0]
    assert rc.labels["data"] == "tab" and rc.config["data"]["options"] == {"label": "cls"}
    with pytest.raises(SpecError, match=r"given both"):
        load_spec(spec(data=[{"name": f"csv:{tmp_path / 't.csv'}", "seed": 1, "options": {"seed": 2}}]))


def test_models_by_factory_reference_in_a_spec(tmp_path, monkeypatch):
    (tmp_path / "t7a_models.py").write_text(
        "import torch\n\ndef make(input_shape, num_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    s = spec(models=["t7a_models:make"])
    rc = expand(check_spec(s))[0]
    assert rc.config["model"] == {"name": "t7a_models:make", "kwargs": {}}
    from robustlab.bench._worker import execute_run

    res = execute_run(rc.config, threads=1)
    assert res["status"] == "completed", res.get("error")
    with pytest.raises(SpecError, match=r"models\[0\] \(t7a_models:nope\)"):
        check_spec(spec(models=["t7a_models:nope"]))


def test_model_files_in_a_spec_resolve_from_the_spec_folder(tmp_path):
    import torch

    from robustlab import data

    d = data.load("gaussians", n_train=60, n_test=30, dim=4)
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, d.num_classes)))
    torch.jit.save(scripted, str(tmp_path / "m.ts"))
    (tmp_path / "s.yaml").write_text(json.dumps(spec(models=["m.ts"])))
    rc = expand(check_spec(str(tmp_path / "s.yaml")))[0]
    assert rc.config["model"]["name"] == str(tmp_path / "m.ts") and rc.labels["model"] == "m.ts"
    with pytest.raises(SpecError, match=r"models\[0\] \(gone.pt\)"):
        check_spec(spec(models=["gone.pt"]))


def test_dry_run_catches_what_only_running_shows(tmp_path, monkeypatch):
    (tmp_path / "t7a_bad.py").write_text(
        "import torch\n\ndef make(num_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, num_classes))  # 3 != 4 features\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    s = spec(models=["linear", "t7a_bad:make"], losses=["ce", "gce"])
    check_spec(s, dry_run=False)  # it builds ...
    with pytest.raises(SpecError) as e:
        check_spec(s)  # ... but cannot take a training step
    assert len(e.value.problems) == 2  # one per distinct (data, model, loss, objective), none for 'linear'
    assert all("model=t7a_bad:make" in p and "one training step fails" in p for p in e.value.problems)
