"""Alignment under DeepSpeed ZeRO on 2 ranks computes the one-process alignment (align/distributed.py).

The equality runs `run_rank` on 2 spawned gloo ranks, without Ray (one process start-up for every case,
~30 s on 2 cores), against `train_alignment` in this process: adapter-only, full fine-tuning and LoRA,
ZeRO-2 and ZeRO-3, the same per-step losses and the same saved weights. Then the real launcher: Ray
Train's TorchTrainer with 2 CPU workers, from a plain call and from inside a Ray Tune trial (the lab's
path), and a NaN on one rank stopping both as "diverged".
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.tune.pipeline import pipeline
from uqa_ray.align.config import align_config
from uqa_ray.align.steps import load_aligned
from uqa_ray.align.train import train_alignment
from uqa_ray.distributed import FolderCheckpoints
from uqa_ray.faults import Faults

pytestmark = pytest.mark.slow

WORLD = 2
# (strategy, ZeRO stage, nan_at_step): every strategy once, each stage with a trained LLM, and a NaN.
CASES = [("adapter", 2, 0), ("full", 3, 0), ("lora", 2, 0), ("adapter", 3, 0), ("full", 2, 0), ("lora", 3, 0),
         ("adapter", 2, 2)]


def _cfg(strategy: str, stage: int, workers: int, **over):
    # batch 6 over 2 ranks: 3 rows each; the loss is the mean over the tokens of all 6 rows.
    return align_config("embedded", {
        "max_steps": 3, "batch_size": 6, "log_every": 1, "strategy": strategy, "llm_lr": 1e-3,
        "scaling": {"num_workers": workers, "zero_stage": stage, "cpus_per_worker": 0.5}}, over)


# Resumed runs: LoRA with dropout (the RNG must resume too) under ZeRO-3, the adapter alone under ZeRO-2.
RESUME_CASES = [("lora", 3, 0), ("adapter", 2, 0)]


def _resume_cfg(strategy: str, stage: int, workers: int = WORLD):
    return _cfg(strategy, stage, workers, max_steps=4, lora={"dropout": 0.1},
                scaling={"num_workers": workers, "zero_stage": stage, "cpus_per_worker": 0.5,
                         "checkpoint_every": 2})


def _name(case) -> str:
    return "{}-z{}-nan{}".format(*case)


def _rank(rank: int, port: int, pipe: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from uqa_ray.align.distributed import run_rank

    for case in CASES:
        summary = run_rank(_cfg(case[0], case[1], WORLD), pipe["data"], pipe["enc0"], pipe["llm"],
                           Path(out) / _name(case), faults=Faults(nan_at_step=case[2]))
        Path(out, f"{_name(case)}-rank{rank}.json").write_text(json.dumps(summary))
    for case in RESUME_CASES:  # a run checkpointed at step 2 of 4, then started again on its checkpoints
        sink = FolderCheckpoints(Path(out) / f"{_name(case)}-checkpoints")
        for run in ("first", "again"):
            summary = run_rank(_resume_cfg(*case[:2]), pipe["data"], pipe["enc0"], pipe["llm"],
                               Path(out) / f"{_name(case)}-{run}", sink=sink)
            Path(out, f"{_name(case)}-{run}-rank{rank}.json").write_text(json.dumps(summary))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def pipe(tiny_data, tmp_path_factory):
    return pipeline(tiny_data, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def ranked(pipe, tmp_path_factory):
    """Every case run by 2 gloo ranks: {case name: (folder, [summary of rank 0, of rank 1])}."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ranked")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(port, {k: str(v) for k, v in pipe.items()}, str(out)), nprocs=WORLD,
                       start_method="spawn")
    return {_name(c): (out / _name(c), [json.loads((out / f"{_name(c)}-rank{r}.json").read_text())
                                        for r in range(WORLD)]) for c in CASES}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{f.parent.name}/{k}": v
            for f in sorted(folder.rglob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("case", [c for c in CASES if not c[2]], ids=_name)
def test_two_ranks_compute_the_one_process_alignment(pipe, ranked, tmp_path, case):
    strategy, stage, _ = case
    folder, (s0, s1) = ranked[_name(case)]
    one = train_alignment(_cfg(strategy, stage, 0), pipe["data"], pipe["enc0"], pipe["llm"], tmp_path / "one")
    assert s0["status"] == s1["status"] == one["status"] == "ok"
    assert s0["world"] == 2 and s0["zero_stage"] == stage and s0["steps"] == one["steps"] == 3
    assert s0["loss_curve"] == s1["loss_curve"]  # every rank reports the global loss
    # ZeRO-3 loads the LLM partitioned (HfDeepSpeedConfig -> zero.Init); the lower stages hold it whole
    assert s0["llm_partitioned_at_load"] == (stage == 3)
    assert s0["loss_curve"] == pytest.approx(one["loss_curve"], rel=1e-5)
    # the LLM trained (full/LoRA) or did not (adapter): the losses move differently, as in one process
    dist_w, one_w = _weights(folder), _weights(tmp_path / "one")
    assert set(dist_w) == set(one_w) and {k.split("/")[0] for k in one_w} == \
        {"adapter", *({"full": ["llm"], "lora": ["lora"]}.get(strategy, []))}
    for k, v in one_w.items():
        torch.testing.assert_close(dist_w[k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("case", RESUME_CASES, ids=_name)
def test_a_restarted_group_resumes_from_its_checkpoint_with_the_uninterrupted_losses_and_weights(
        pipe, ranked, case):
    out = next(iter(ranked.values()))[0].parent
    first, again = ([json.loads((out / f"{_name(case)}-{run}-rank{r}.json").read_text()) for r in range(WORLD)]
                    for run in ("first", "again"))
    assert first[0]["steps"] == again[0]["steps"] == 4 and "resumed_from_step" not in first[0]
    # The second start took the step-2 checkpoint (the only one: none is written at the last step) ...
    assert again[0]["resumed_from_step"] == again[1]["resumed_from_step"] == 2
    root = out / f"{_name(case)}-checkpoints"
    ckpt = root / "checkpoints" / "latest"
    assert not ckpt.with_name("previous").exists()
    assert [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()] == [{"checkpoint_step": 2}]
    # ... which holds what trains only: no encoder weight, no frozen LLM layer (LoRA's matrices do train).
    for f in (ckpt / "ckpt").glob("*model_states.pt"):
        names = list(torch.load(f, weights_only=False)["module"])
        assert names and not [n for n in names if n.startswith("encoder.") or (".layers." in n and "lora_" not in n)]
    # ... and ended as the uninterrupted run: the same losses (the first two restored, the last two
    # recomputed: the data order and dropout RNG resumed) and the same weights.
    assert again[0]["loss_curve"] == pytest.approx(first[0]["loss_curve"], rel=1e-6)
    a, b = _weights(out / f"{_name(case)}-first"), _weights(out / f"{_name(case)}-again")
    assert set(a) == set(b) and a
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


def test_a_nan_on_one_rank_stops_every_rank_as_diverged_and_saves_nothing(ranked):
    folder, summaries = ranked[_name(("adapter", 2, 2))]
    for s in summaries:  # rank 0's loss was finite: it learned of rank 1's NaN from the all-reduce
        assert s["status"] == "diverged" and s["steps"] == 2
        assert s["reason"] == "step 2: non-finite training loss on 1 of 2 ranks"
    assert not folder.exists()


def test_ray_train_launcher_writes_the_alignment_and_cleans_its_storage(pipe, ranked, tmp_path):
    cfg = _cfg("full", 3, WORLD)
    out = tmp_path / "aligned" / "x"
    summary = train_alignment(cfg, pipe["data"], pipe["enc0"], pipe["llm"], out)
    _, (ranked0, _) = ranked[_name(("full", 3, 0))]
    assert summary["status"] == "ok" and summary["world"] == 2 and summary["wall_s"] >= summary["train_s"]
    assert summary["loss_curve"] == pytest.approx(ranked0["loss_curve"], rel=1e-9)
    assert json.loads((out / "train.json").read_text())["loss_curve"] == summary["loss_curve"]
    model, _, _ = load_aligned(out, pipe["enc0"], pipe["llm"])
    assert model.strategy == "full" and (out / "llm" / "config.json").is_file()
    assert not (tmp_path / "aligned" / ".ray_train" / "x").exists()  # the checkpoint was copied, then dropped


class WorkerKiller(threading.Thread):
    """SIGKILLs one Ray Train worker process once two mid-run checkpoints are in the run's storage (the
    first is then registered: a folder alone may still be on its way to Ray Train's controller)."""

    def __init__(self, storage: Path):
        super().__init__(daemon=True)
        self.storage, self.killed, self.stop = storage, None, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            if sum((c / "ckpt").is_dir() for c in self.storage.glob("checkpoint_*")) < 2:
                continue
            for p in psutil.process_iter():
                try:
                    title = (p.cmdline() or [""])[0]
                    if title.startswith("ray::RayTrainWorker"):
                        p.send_signal(signal.SIGKILL)
                        self.killed = title
                        return
                except psutil.Error:
                    pass


def test_a_killed_ray_train_worker_is_replaced_and_the_alignment_resumes_from_its_checkpoint(pipe, tmp_path):
    """A preempted worker: Ray Train restarts the group (max_failures) and it resumes from the last mid-run
    checkpoint; the alignment ends with the losses and weights of the same alignment in one process."""
    over = {"max_steps": 12, "scaling": {"num_workers": WORLD, "cpus_per_worker": 0.5, "checkpoint_every": 2,
                                         "max_failures": 1}}
    out = tmp_path / "aligned" / "x"
    killer = WorkerKiller(out.parent / ".ray_train" / out.name)
    killer.start()
    try:
        summary = train_alignment(_cfg("lora", 2, WORLD, **over), pipe["data"], pipe["enc0"], pipe["llm"], out)
    finally:
        killer.stop.set()
    assert killer.killed, "no worker was killed: the run ended before its second checkpoint was stored"
    assert summary["status"] == "ok" and summary["steps"] == 12 and 2 <= summary["resumed_from_step"] < 12
    over["scaling"]["num_workers"] = 0
    one = train_alignment(_cfg("lora", 2, 0, **over), pipe["data"], pipe["enc0"], pipe["llm"], tmp_path / "one")
    assert summary["loss_curve"] == pytest.approx(one["loss_curve"], rel=1e-5)
    dist_w, one_w = _weights(out), _weights(tmp_path / "one")
    assert set(dist_w) == set(one_w)
    for k, v in one_w.items():
        torch.testing.assert_close(dist_w[k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


def test_a_tune_trial_trains_its_alignment_with_ray_train(pipe, tmp_path):
    """The lab's path: run_grid -> Tune trial -> TorchTrainer (2 workers) -> evaluation -> record; the
    workers' progress reaches the trial's Tune results."""
    from uqa_ray.config import build
    from uqa_ray.tune.grid import GridSpec, run_grid

    spec = build(GridSpec, {
        "encoders": [{"dir": str(pipe["enc0"]), "preset": "tiny", "loss": "ce"}], "methods": ["encoder"],
        "llm": str(pipe["llm"]), "align_preset": "embedded", "n_boot": 10, "max_questions": 8, "resources": {"CPU": 1},
        "align": {"max_steps": 2, "batch_size": 4, "log_every": 1, "eval_batch_size": 8,
                  "scaling": {"num_workers": 2, "cpus_per_worker": 0.5}}})
    records, missing = run_grid("dist", spec, pipe["data"], tmp_path / "results", tmp_path / "tune")
    assert [r["status"] for r in records] == ["ok"] and missing == []
    assert records[0]["timings"]["align_steps"] == 2
    aligned = json.loads(next((tmp_path / "tune" / "aligned").glob("*/train.json")).read_text())
    assert aligned["world"] == 2
    lines = [json.loads(x) for p in (tmp_path / "tune").glob("dist-*/*/result.json")
             for x in p.read_text().splitlines()]
    assert [x["progress/step"] for x in lines if "progress/step" in x] == [1, 2]



def test_each_rank_takes_its_part_of_every_global_batch_and_a_short_last_batch_is_skipped(pipe):
    import numpy as np

    from uqa_ray.align.data import QuestionSplit
    from uqa_ray.align.distributed import rank_rows
    from uqa_ray.align.steps import Steps

    rows = np.arange(7)
    parts = [rank_rows(rows, r, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4], [5, 6]]  # the batch, once, in order
    data = QuestionSplit(pipe["data"], "train")
    cfg = align_config("embedded", {"batch_size": 5, "epochs": 1, "max_steps": 0})
    n = len(data)
    assert n % 5 == 2  # the tiny questions leave a last batch of 2 rows
    one, three = Steps(cfg, data, None), Steps(cfg, data, None, min_rows=3)
    assert [len(r) for _, r in one][-1] == 2 and one.skipped == 0
    assert [len(r) for _, r in three] == [5] * (n // 5) and three.skipped == 2


def test_a_bad_deepspeed_json_is_named_before_any_worker_starts(pipe, tmp_path):
    from uqa_ray.io import InputError

    bad = tmp_path / "ds.json"
    bad.write_text("{not json")
    cfg = _cfg("adapter", 2, WORLD, scaling={"num_workers": WORLD, "deepspeed": str(bad)})
    with pytest.raises(InputError, match="ds.json"):
        train_alignment(cfg, pipe["data"], pipe["enc0"], pipe["llm"], tmp_path / "aligned" / "x")
    assert not (tmp_path / "aligned").exists()  # no folder, no Ray Train run
