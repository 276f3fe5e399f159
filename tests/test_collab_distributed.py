"""Real processes: 4 gloo ranks with 1 Byzantine agree with the one-process simulation."""

import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CASES = [  # (aggregator, byzantine, heterogeneity): a params exchange (MoNNA) and a momentum exchange
    ("monna", "sign_flip", "iid"),
    ("trimmed_mean", "ipm", "dirichlet:1"),
    ("coordinate_median", "label_flip", "iid"),
]
KW = dict(workers=4, f=1, epochs=2, batch_size=16, lr=0.5, momentum=0.9, weight_decay=1e-4, seed=3,
          schedule="cosine", eval_every=2)


_DATA = []  # loaded once in the parent; the forked ranks share it


def _model_and_data():
    from robustlab import data, models

    if not _DATA:
        _DATA.append(data.load("digits").subset(n_train=200, n_test=100))
    d = _DATA[0]
    torch.manual_seed(0)
    return models.create("mlp", input_shape=d.input_shape, num_classes=d.num_classes, hidden=(32,)), d


def _worker(rank, world, port, out):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from robustlab.collab.distributed import fit_distributed

        res = []
        for agg, byz, het in CASES:
            model, d = _model_and_data()
            r = fit_distributed(model, d, aggregator=agg, byzantine=byz, heterogeneity=het, **KW)
            res.append((torch.cat([p.detach().reshape(-1) for p in r.model.parameters()]), r.history))
        torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed (gloo)")
def test_four_gloo_ranks_match_the_simulation(tmp_path):
    from robustlab import collab

    _model_and_data()
    mp.start_processes(_worker, args=(4, _free_port(), str(tmp_path)), nprocs=4, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(4)]
    for c, (agg, byz, het) in enumerate(CASES):
        model, d = _model_and_data()
        sim_loop = collab.fit(model, d, aggregator=agg, byzantine=byz, heterogeneity=het, batched=False, **KW)
        flat = torch.cat([p.detach().reshape(-1) for p in sim_loop.model.parameters()])
        # the loop path computes exactly what each rank computes: same numbers up to float32 reduction order
        torch.testing.assert_close(ranks[0][c][0], flat, rtol=1e-5, atol=1e-6)
        assert ranks[0][c][1]["test_acc"] == pytest.approx(sim_loop.history["test_acc"], abs=1e-6)
        honest = [ranks[r][c][0] for r in range(3)]
        if agg != "monna":  # one server-style aggregate: every honest rank holds the same model
            for h in honest[1:]:
                torch.testing.assert_close(h, honest[0], rtol=0, atol=0)
        model, d = _model_and_data()
        sim = collab.fit(model, d, aggregator=agg, byzantine=byz, heterogeneity=het, batched=True, **KW)
        # the batched (vmap) simulation: same rounds, gradients summed in another order
        flat_b = torch.cat([p.detach().reshape(-1) for p in sim.model.parameters()])
        torch.testing.assert_close(flat_b, flat, rtol=1e-3, atol=1e-4)
