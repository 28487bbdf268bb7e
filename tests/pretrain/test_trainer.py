"""Ray Train + DeepSpeed pretraining on the `tiny` data: 2 CPU workers over gloo.

Three real runs (ZeRO-2, the same run killed by SIGKILL after a checkpoint and restarted by Ray Train,
ZeRO-3), about a minute each on 2 cores.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from uqa_ray.config import build
from uqa_ray.data.collate import collate
from uqa_ray.data.stream import open_ipc
from uqa_ray.data.windows import count_windows
from uqa_ray.encoders import load_encoder
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.pretrain.trainer import pretrain, run_name

pytestmark = pytest.mark.slow


def _cfg(data, storage, **over) -> PretrainConfig:
    base = {
        "data": str(data), "preset": "tiny", "max_len": 32, "seed": 3,
        "optim": {"epochs": 4, "lr": 3e-3, "micro_batch": 8},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5, "checkpoint_every": 10, "storage": str(storage)},
        "eval_batch": 32,
        "eval_last": 3,  # each eval user's last 3 clicks are scored (the official protocol: the last one)
    }
    return build(PretrainConfig, base, over)


@pytest.fixture(scope="module")
def zero2(tiny_data, tmp_path_factory):
    return pretrain(_cfg(tiny_data, tmp_path_factory.mktemp("runs"), scaling={"zero_stage": 2}))


def test_zero2_learns_and_beats_most_popular(zero2):
    m = zero2.metrics
    assert zero2.status == "ok" and m["final"] and m["epoch"] == 4
    assert m["eval/HR@10"] > m["baseline/most_popular/HR@10"], m
    assert m["eval/n"] > 0 and m["positions_per_s"] > 0


def test_two_workers_score_every_eval_user_and_baselines_the_same_users(zero2, tiny_data):
    # Ray's equal split would drop the remainder rows of the eval set; every user must be scored once,
    # on each of its last 3 clicks that has a click before it (in the 32-click window).
    lengths = [len(r) for r in open_ipc(tiny_data / "pretrain_data_eval.arrow").read_all()
               .column("uni_seq_item_id").to_pylist()]
    m = zero2.metrics
    want = sum(max(0, min(min(n, 32) - 1, 3)) for n in lengths)
    assert m["eval/n"] == want and len(lengths) % 2 == 1, (m["eval/n"], want, len(lengths))
    ranks = json.loads((zero2.run_dir / "eval_ranks.json").read_text())
    assert ranks["row"] == sorted(set(ranks["row"])) and len(ranks["row"]) == want  # one key per target
    assert {r // 3 for r in ranks["row"]} == {i for i, n in enumerate(lengths) if n >= 2}
    assert m["baseline/most_popular/n"] == m["baseline/recent_popular/n"] == m["eval/n"]
    summary = json.loads((zero2.run_dir / "summary.json").read_text())
    assert summary["metrics"]["eval/HR@10"] == m["eval/HR@10"]


def test_one_worker_sliding_windows_same_eval_users(zero2, tiny_data, tmp_path):
    # One worker instead of two: the same eval users and baselines. Sliding windows: one epoch is
    # every window of every training user (count_windows), cut into micro-batches. The loss is the mixed
    # sampled softmax, whose in-batch proposal needs the training popularity in the worker, with row-sparse
    # tables (ZeRO-1) whose export comes from the module state, not from zero_to_fp32's optimizer partitions.
    res = pretrain(_cfg(tiny_data, tmp_path, windows="sliding", optim={"epochs": 1, "tables": "sparse"},
                        scaling={"num_workers": 1, "cpus_per_worker": 1, "zero_stage": 1, "checkpoint_every": 0},
                        loss={"kind": "sampled", "sampler": "mixed", "n_negatives": 64}))
    assert res.status == "ok"
    m = res.metrics
    for k in ("eval/n", "baseline/most_popular/HR@10", "baseline/recent_popular/NDCG@10"):
        assert m[k] == zero2.metrics[k], k
    windows = count_windows(tiny_data / "pretrain_data_train.arrow", 32, "sliding")
    users = count_windows(tiny_data / "pretrain_data_train.arrow", 32, "last")
    assert windows > users and m["step"] == windows // 8, (m["step"], windows, users)
    ranks = json.loads((res.run_dir / "eval_ranks.json").read_text())
    assert len(ranks["row"]) == len(ranks["model"]) == m["eval/n"]
    two = json.loads((zero2.run_dir / "eval_ranks.json").read_text())
    assert ranks["row"] == two["row"] and ranks["recent_popular"] == two["recent_popular"]
    model, _ = load_encoder(res.encoder_dir)
    item = model.item_input.item_embedding.weight
    assert torch.isfinite(item).all() and item[1:].std() > 0


def test_loss_falls(zero2):
    history = zero2.metrics["loss_history"]
    assert len(history) == 4 and history[-1] < history[0], history


def test_export_loads_without_ray_and_matches_checkpoint(zero2, tiny_data):
    model, cfg = load_encoder(zero2.encoder_dir)
    assert cfg.max_len == 32 and cfg.name == "trm_pp"
    batch = collate(open_ipc(tiny_data / "pretrain_data_eval.arrow").get_record_batch(0).slice(0, 4), 32)
    with torch.no_grad():
        h = model(batch)
    assert h.shape[:2] == batch["mask"].shape and torch.isfinite(h).all()


def test_worker_sigkill_resumes_to_identical_metrics(zero2, tiny_data, tmp_path, monkeypatch):
    # Same config and seed; rank 1 SIGKILLs itself at step 14 (after the step-10 checkpoint). Ray Train
    # restarts the worker group, which resumes from that checkpoint, data position and RNG included.
    monkeypatch.setenv("UQA_RAY_FAULTS", '{"fail_at_step": 14}')  # uqa_ray/faults.py
    cfg = _cfg(tiny_data, tmp_path, scaling={"zero_stage": 2, "max_failures": 1})
    assert run_name(cfg) == zero2.run_dir.name  # fault injection and retries do not change the run key
    res = pretrain(cfg)
    assert res.status == "ok"
    assert (res.run_dir / ".failed-at-14").exists(), "the fault was not injected"
    for k in ("train_loss", "eval/HR@10", "eval/NDCG@10", "eval/HR@50"):
        assert res.metrics[k] == pytest.approx(zero2.metrics[k], rel=1e-5, abs=1e-6), k


def test_rerun_reuses_finished_run(zero2, tiny_data):
    again = pretrain(_cfg(tiny_data, zero2.run_dir.parent, scaling={"zero_stage": 2}))
    assert again.reused and again.metrics == zero2.metrics


def test_zero3_matches_zero2(zero2, tiny_data, tmp_path):
    # Same seed, same data order: ZeRO-3 (parameters partitioned at construction by zero.Init, gathered
    # on use) must train the same model as ZeRO-2, up to the order of floating-point reductions.
    res = pretrain(_cfg(tiny_data, tmp_path, scaling={"zero_stage": 3}))
    assert res.status == "ok"
    # ZeRO-3 learns on its own account: its per-epoch loss falls (not only "close to ZeRO-2's").
    history = res.metrics["loss_history"]
    assert len(history) == 4 and all(map(math.isfinite, history)), history
    assert history[-1] < history[0], history
    assert res.metrics["train_loss"] == pytest.approx(zero2.metrics["train_loss"], rel=1e-3)
    assert res.metrics["eval/HR@10"] == pytest.approx(zero2.metrics["eval/HR@10"], abs=0.03)
    assert res.metrics["eval/HR@10"] > res.metrics["baseline/most_popular/HR@10"]
    model, _ = load_encoder(res.encoder_dir)  # ZeRO-3 shards gathered to one fp32 export
    ref, _ = load_encoder(zero2.encoder_dir)
    # Adam turns ulp-level gradient differences (reduction order) into lr-sized steps, so compare the
    # weights by relative norm rather than elementwise.
    for (name, p), q in zip(model.state_dict().items(), ref.state_dict().values()):
        assert (p - q).norm() <= 5e-2 * q.norm() + 1e-6, name


def test_arrow_feed_under_ray_train_trains_as_torchrun_does(zero2, tiny_data, tmp_path):
    """`feed: arrow`: each Ray Train worker reads the memory-mapped Arrow files itself (no Ray Data), the
    reader torchrun uses, so the two launchers train the same model: the same losses and eval metrics.
    Another order than Ray Data's shuffle buffer, so another run key."""
    from tests.pretrain.test_torchrun import _torchrun

    res = pretrain(_cfg(tiny_data, tmp_path / "ray", feed="arrow", optim={"epochs": 2}, scaling={"zero_stage": 2}))
    assert res.status == "ok" and res.run_dir.name != zero2.run_dir.name
    _, lines = _torchrun(tiny_data, tmp_path / "torchrun", "seed=3", "optim.epochs=2", "optim.micro_batch=8",
                         "eval_batch=32", "eval_last=3", "scaling.zero_stage=2", "feed=arrow")
    ray_m, tr_m = res.metrics, lines[-1]
    assert ray_m["step"] == tr_m["step"] and ray_m["eval/n"] == tr_m["eval/n"] > 0
    for k in ("train_loss", "eval/loss", "eval/NDCG@10"):
        assert math.isclose(ray_m[k], tr_m[k], rel_tol=1e-4), (k, ray_m[k], tr_m[k])
    assert ray_m["eval/HR@10"] == tr_m["eval/HR@10"]
    assert ray_m["eval/HR@10"] > ray_m["baseline/most_popular/HR@10"]
