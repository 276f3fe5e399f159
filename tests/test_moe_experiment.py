"""benchmarks/exp_moe.py: the MAC count (k of E active experts) and the robustness / routing-change numbers."""


import torch
from _helpers import load_script

from robustlab import models


def _exp():
    return load_script("benchmarks/exp_moe.py", "exp_moe")


def test_forward_macs_counts_k_active_experts_and_the_router():
    exp = _exp()
    dense = models.create("lenet", input_shape=(1, 8, 8), num_classes=10)
    # conv 6x1x25 on 8x8, conv 16x6x25 on 4x4, Linear 64-120-84-10
    assert exp.forward_macs(dense, (1, 8, 8)) == 6 * 25 * 64 + 16 * 6 * 25 * 16 + 64 * 120 + 120 * 84 + 84 * 10
    moe = models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=10, experts=4, top_k=2)
    want = 2 * 6 * 25 * 64 + 1 * 4 + 2 * 16 * 6 * 25 * 16 + 6 * 4 + 64 * 120 + 120 * 84 + 84 * 10
    assert exp.forward_macs(moe, (1, 8, 8)) == want


def test_robustness_reports_accuracies_and_routing_changes():
    exp = _exp()
    torch.manual_seed(0)
    m = models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=3, channels=(2, 3), hidden=(8,))
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 3
    res = exp.robustness(m, x, y, eps=0.3, queries=5, seed=0)
    assert set(res) == {"clean", "pgd20", "square", "robust", "routing_changed"}
    assert all(0.0 <= v <= 1.0 for v in res.values())
    assert res["robust"] <= min(res["clean"], res["pgd20"], res["square"])
    dense = exp.robustness(models.create("lenet", input_shape=(1, 8, 8), num_classes=3), x, y, 0.3, 5, 0)
    assert dense["routing_changed"] != dense["routing_changed"]  # NaN: no MoE layer


def test_standard_suite_and_router_robustness_curve():
    exp = _exp()
    torch.manual_seed(0)
    m = models.create("moe_lenet", input_shape=(1, 8, 8), num_classes=3, channels=(2, 3), hidden=(8,))
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 3
    res = exp.robustness(m, x, y, eps=0.3, queries=5, seed=0, suite=True)
    assert {"standard", "worst"} <= set(res)
    assert res["worst"] <= min(res["standard"], res["robust"]) and res["standard"] <= res["clean"]
    curve = exp.routing_curve(m, x, y, [0.0, 0.3], seed=0)
    assert curve[0] == 0.0 and 0.0 <= curve[1] <= 1.0  # eps = 0 cannot move the routing
    svg = exp.routing_figure({"moe / pgd_at": [curve, curve]}, [0.0, 0.3], "t")
    assert svg.startswith("<svg") and "moe / pgd_at, seed 0" in svg and "moe / pgd_at, seed 1" in svg
