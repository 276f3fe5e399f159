"""Adversarial distillation: ard / mtard, the B-MTARD balance rules, teachers from checkpoints."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab import attacks, data, losses, models, training
from robustlab.training import Batch, objectives
from robustlab.training.objectives._distillation import entropy_balance, normalized_loss_balance

EPS = 0.2


def test_entropy_balance_sharpens_the_less_confident_teacher():
    sharp = F.softmax(torch.tensor([[5.0, 0.0, 0.0]]).repeat(4, 1), 1)
    flat = F.softmax(torch.tensor([[0.5, 0.0, 0.0]]).repeat(4, 1), 1)
    # the robust teacher is the less confident one: its temperature goes down, the clean one's up
    tau_adv, tau_nat = entropy_balance(2.0, 2.0, flat, sharp, lr=0.1)
    assert tau_adv == pytest.approx(1.9) and tau_nat == pytest.approx(2.1)
    tau_adv, tau_nat = entropy_balance(2.0, 2.0, sharp, flat, lr=0.1)
    assert tau_adv == pytest.approx(2.1) and tau_nat == pytest.approx(1.9)
    assert entropy_balance(1.0, 10.0, flat, sharp, lr=0.5) == (1.0, 10.0)  # clipped to [1, 10]
    # iterating the rule brings the entropies together
    logits_a, logits_n = torch.tensor([[0.5, 0.0, 0.0]]), torch.tensor([[5.0, 0.0, 0.0]])
    ta, tn = 3.0, 3.0

    def ent(z, t):
        p = F.softmax(z / t, 1)
        return float(-(p * p.log()).sum())

    gap0 = abs(ent(logits_a, ta) - ent(logits_n, tn))
    for _ in range(200):
        ta, tn = entropy_balance(ta, tn, F.softmax(logits_a / ta, 1), F.softmax(logits_n / tn, 1), lr=0.01)
    assert abs(ent(logits_a, ta) - ent(logits_n, tn)) < gap0


def test_normalized_loss_balance_matches_formula_and_stays_on_simplex():
    w = (0.5, 0.5)
    new = normalized_loss_balance(w, (0.9, 0.3), (1.0, 1.0), lr=0.025)
    rel = np.array([0.9, 0.3])
    r = rel / rel.mean()
    expect = np.array(w) - 0.025 * (np.array(w) - r / r.sum())
    expect = np.maximum(expect, 0) / np.maximum(expect, 0).sum()
    assert np.allclose(new, expect)
    assert new[0] > 0.5  # the adversarial loss fell more slowly: more weight
    for _ in range(500):
        new = normalized_loss_balance(new, (0.9, 0.3), (1.0, 1.0), lr=0.5)
        assert min(new) >= 0 and sum(new) == pytest.approx(1.0)


def test_ard_value_matches_formula():
    torch.manual_seed(0)
    student = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    teacher = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g)
    x_adv = (x + 0.05).clamp(0, 1)
    obj = objectives.get("ard", teacher=teacher, eps=0.1, temperature=3.0, teacher_weight=0.7)
    obj.perturb = lambda model, x, criterion: x_adv
    value, _ = obj(student, Batch(x, y, torch.arange(10)), losses.get("ce"))
    with torch.no_grad():
        p = F.softmax(teacher(x) / 3, 1).double()
        q = F.softmax(student(x_adv) / 3, 1).double()
        kl = (p * (p.log() - q.log())).sum(1).mean()
        ce = F.cross_entropy(student(x), y).double()
    assert float(value.detach()) == pytest.approx(float(0.7 * 9 * kl + 0.3 * ce), rel=1e-5)
    assert all(not p.requires_grad for p in obj.teacher.parameters())
    assert all(p.requires_grad for p in teacher.parameters())  # the caller's module is untouched


def test_teacher_from_checkpoint_path(tmp_path):
    torch.manual_seed(0)
    teacher = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    training.save_checkpoint(teacher, tmp_path / "run")
    obj = objectives.get("ard", teacher=str(tmp_path / "run"), eps=0.1)
    x = torch.rand(4, 6)
    assert torch.allclose(obj.teacher(x), teacher(x))
    with pytest.raises(FileNotFoundError):
        objectives.get("ard", teacher=str(tmp_path / "missing"), eps=0.1)
    with pytest.raises(TypeError, match="teacher"):
        objectives.get("ard", eps=0.1)
    with pytest.raises(TypeError, match="clean_teacher"):
        objectives.get("mtard", robust_teacher=teacher, eps=0.1)


# ---------------------------------------------------------------------------------------------
# distilled students are robust (seeded, margins far beyond the noise of 450 test images)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setting():
    d = data.load("digits")

    def train(objective, kw=None, hidden=(64,)):
        torch.manual_seed(0)
        m = models.create("mlp", input_shape=d.input_shape, num_classes=10, hidden=hidden)
        training.fit(m, d, objective=objective, objective_kw=kw, epochs=20, batch_size=64, lr=0.05,
                     progress=False, seed=0)
        return m

    def score(m):
        atk = attacks.get("pgd", norm="linf", eps=EPS, step_size=EPS / 4, steps=10)
        x_adv = atk(m, d.x_test, d.y_test, generator=torch.Generator().manual_seed(0))
        clean = float((training.predict_logits(m, d.x_test).argmax(1) == d.y_test).float().mean())
        robust = float((training.predict_logits(m, x_adv).argmax(1) == d.y_test).float().mean())
        return clean, robust

    std = train("standard")
    rob = train("pgd_at", {"eps": EPS, "steps": 5})
    return {"train": train, "score": score, "standard": std, "robust": rob, "std_score": score(std)}


def test_ard_student_beats_standard(setting):
    std_clean, std_robust = setting["std_score"]
    assert std_robust < 0.15
    student = setting["train"]("ard", {"teacher": setting["robust"], "eps": EPS, "steps": 5}, hidden=(32,))
    clean, robust = setting["score"](student)
    assert robust >= std_robust + 0.2 and clean > 0.7


def test_mtard_student_beats_standard_and_balances(setting):
    std_clean, std_robust = setting["std_score"]
    obj = objectives.get("mtard", clean_teacher=setting["standard"], robust_teacher=setting["robust"],
                         eps=EPS, steps=5, tau_lr=0.01)
    student = setting["train"](obj, hidden=(32,))
    clean, robust = setting["score"](student)
    assert robust >= std_robust + 0.2 and clean > 0.7
    assert obj.w_adv + obj.w_nat == pytest.approx(1.0) and obj.w_adv != 0.5  # the balance rule moved
    assert 1.0 <= obj.tau_adv <= 10.0 and 1.0 <= obj.tau_nat <= 10.0


def test_mtard_attack_starts_at_a_tiny_gaussian():
    # review fix: the B-MTARD student attack starts at x + 0.001 N(0, I) (the authors' code), not uniformly
    torch.manual_seed(0)
    student = models.create("mlp", input_shape=(6,), num_classes=3, hidden=(8,))
    teacher = models.create("linear", input_shape=(6,), num_classes=3)
    obj = objectives.get("mtard", eps=0.3, steps=1, step_size=1e-6, clean_teacher=teacher, robust_teacher=teacher)
    x = torch.full((64, 6), 0.5)
    d = (obj.perturb(student, x, lambda lg: lg.logsumexp(1).sum()) - x).abs()
    assert 0 < float(d.max()) < 0.01
