"""Alignment under Ray Train + DeepSpeed ZeRO: one alignment trained by `scaling.num_workers` ranks.

`train_distributed` (called by `train_alignment` when `AlignConfig.scaling.num_workers` >= 1, so from
inside a Ray Tune trial) launches a Ray Train TorchTrainer; each worker runs `run_rank`, plain torch +
DeepSpeed over the process group that Ray Train set up (NCCL on GPUs, gloo on CPUs; a test starts
`run_rank` on its own gloo group without Ray). N ranks compute the one-process step (`run_rank` says
how: the same global batches split across ranks, the loss over the whole batch's tokens, one stop for
all on a non-finite loss), with steps.py's AdamW as a DeepSpeed client optimiser and DeepSpeed's
global-norm clip. ZeRO-3 partitions the LLM as it loads (transformers' HfDeepSpeedConfig), so no GPU
holds a 3B model whole while it trains; bf16 on GPU with fp32 master weights, fp32 on CPU.

Mid-run checkpoints every `scaling.checkpoint_every` steps let a worker group that Ray Train restarts
(`scaling.max_failures`) resume and end with the uninterrupted run's losses and weights; the trained
weights reach the driver through Ray Train's storage (`train_distributed`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from uqa_ray.align.config import AlignConfig
from uqa_ray.align.data import QuestionSplit
from uqa_ray.align.model import DivergedError
from uqa_ray.align.steps import (Steps, batch_inputs, build_model, close_summary, new_summary, optimizer,
                                 save_trained, write_alignment)
from uqa_ray.config import build, to_dict
from uqa_ray.distributed import CheckpointSink, RayCheckpoints, allreduce_sum, load_checkpoint, save_checkpoint
from uqa_ray.encoders.config import input_columns
from uqa_ray.faults import Faults, armed
from uqa_ray.pretrain.ds_config import engine_config, resolve_precision
from uqa_ray.raysetup import init_ray, quiet_train_worker, ray_log_level

SAVED = "aligned"  # rank 0's folder inside the reported checkpoint


def rank_rows(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's part of a global batch (contiguous, sizes differing by at most one)."""
    return np.array_split(rows, world)[rank]


def ds_config(cfg: AlignConfig, world: int, on_gpu: bool) -> dict[str, Any]:
    s = cfg.scaling
    extra: dict[str, Any] = {}
    if s.zero_stage == 3:
        # Gather an LLM's small tensors (norms, biases) once instead of at every forward.
        extra["zero_optimization"] = {"stage3_param_persistence_threshold": 1e4}
    return engine_config(micro_batch=math.ceil(cfg.batch_size / world), grad_accum=1, zero_stage=s.zero_stage,
                         precision=resolve_precision("auto", on_gpu), grad_clip=cfg.grad_clip, extra=extra,
                         user_json=s.deepspeed)


@contextlib.contextmanager
def _whole(module: torch.nn.Module, stage: int):
    """The module's full weights on every rank for the block (ZeRO-3 holds shards only)."""
    if stage != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        yield


def run_rank(cfg: AlignConfig, data_dir: str | Path, encoder_dir: str | Path, llm_dir: str | Path,
             save_to: Path | None = None, report: Callable[[dict], None] | None = None,
             sink: CheckpointSink | None = None, faults: Faults = Faults()) -> dict[str, Any]:
    """This rank's share of the alignment -> the run's summary (the same on every rank).

    One step, so that N ranks compute the one-process step: every rank walks the same seeded permutation
    of the TRAIN questions in the same global batches of `batch_size` rows (align/data.py) and takes its
    `rank_rows` part of each; a last batch with fewer rows than ranks is skipped (and counted), since
    under ZeRO-3 every rank must run every forward. The loss is the release's mean over the labelled
    tokens of the WHOLE global batch: each rank returns (sum, count) of its tokens, one all-reduce gives
    the global count, and each rank back-propagates sum * world / count (DeepSpeed averages gradients
    over ranks). The same all-reduce tells every rank whether ANY rank's loss was non-finite, so all stop
    together before a step ("diverged", nothing saved) instead of hanging in the next ZeRO collective; a
    non-finite gradient norm after the step stops too.

    When the run ends ok, rank 0 writes the trained weights into `save_to` (steps.save_trained layout;
    under ZeRO-3 the module's weights are gathered for it). With a checkpoint `sink` the run resumes from
    its newest loadable checkpoint (uqa_ray/distributed.py: each rank's ZeRO shard of what trains,
    without the frozen LLM; the RNG; the step and losses so far) and writes one every
    `scaling.checkpoint_every` steps. `faults`: uqa_ray/faults.py."""
    import deepspeed

    rank, world = dist.get_rank(), dist.get_world_size()
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    t0 = time.perf_counter()
    ds_cfg = ds_config(cfg, world, on_gpu)
    hf_zero3 = None
    if cfg.scaling.zero_stage == 3:
        from transformers.integrations import HfDeepSpeedConfig

        hf_zero3 = HfDeepSpeedConfig(ds_cfg)  # while it lives, from_pretrained loads partitioned (zero.Init)
    data = QuestionSplit(data_dir, "train")
    steps, status, reason = Steps(cfg, data, report, min_rows=world), "ok", None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # every rank builds the same adapter and LoRA weights
        model, tok, enc_cfg = build_model(cfg, encoder_dir, llm_dir, device)
        summary = new_summary(cfg, data, model, (data_dir, encoder_dir, llm_dir))
        # Recorded because it is what makes a 3B ZeRO-3 run fit: no rank ever held the whole LLM. (LoRA's
        # matrices are made after the load, whole, and partitioned by deepspeed.initialize.)
        summary["llm_partitioned_at_load"] = all(hasattr(p, "ds_id") for n, p in model.llm.named_parameters()
                                                 if "lora_" not in n)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer(model, cfg), config=ds_cfg,
                                          dist_init_required=False)
        columns = list(input_columns(enc_cfg.input_mode))
        max_len = min(cfg.max_len, enc_cfg.max_len)
        resumed: dict[str, Any] = {}
        if sink is not None:  # checkpoints hold what trains only: the frozen weights come from the load above
            state, resumed = load_checkpoint(engine, sink, device, ("step", "losses"), "align", strict=False)
            if state:
                steps.resume(state)
                if rank == 0:
                    print(f"[align] resumed at step {steps.start} of {steps.total}", flush=True)
        every = cfg.scaling.checkpoint_every
        engine.train()
        try:
            for epoch, rows in steps:
                mine = rank_rows(rows, rank, world)
                loss_sum, n = engine(batch_inputs(data, mine, tok, cfg, columns, max_len), terms=True)
                loss_sum = faults.poison(loss_sum, steps.step, rank, world)
                local = loss_sum.item()
                finite = math.isfinite(local)
                s_loss, s_n, bad = allreduce_sum([local if finite else 0.0, float(n), 0.0 if finite else 1.0], device)
                if bad:
                    raise DivergedError(f"non-finite training loss on {int(bad)} of {world} ranks")
                engine.backward(loss_sum * (world / s_n))
                engine.step()
                norm = engine.get_global_grad_norm()
                if norm is not None and not math.isfinite(float(norm)):
                    raise DivergedError(f"non-finite gradient norm {float(norm)}")
                steps.done(s_loss / s_n, epoch)
                if sink is not None and every and steps.step % every == 0 and steps.step < steps.total:
                    save_checkpoint(engine, sink, steps.state(), {"checkpoint_step": steps.step},
                                    exclude_frozen=True)
        except DivergedError as e:
            status, reason = "diverged", f"step {steps.step}: {e}"
    engine.eval()
    close_summary(summary, cfg, status, reason, steps, t0)
    summary.update(world=world, zero_stage=cfg.scaling.zero_stage, precision=resolve_precision("auto", on_gpu),
                   rows_skipped=steps.skipped, **resumed)
    if status == "ok":
        with _whole(engine.module, cfg.scaling.zero_stage):  # a collective: every rank enters it
            if rank == 0 and save_to is not None:
                save_to.mkdir(parents=True, exist_ok=True)
                save_trained(engine.module, tok, cfg.strategy, save_to)
    dist.barrier()
    del hf_zero3
    return summary


def _worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's train_loop_per_worker: `run_rank`, then rank 0 reports the weights as a checkpoint."""
    import ray.train

    quiet_train_worker()
    cfg = build(AlignConfig, config["align"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))

    def progress(m: dict) -> None:  # every rank reports (Ray Train V2 reports are collective)
        ray.train.report({f"progress/{k}": v for k, v in m.items()})

    with tempfile.TemporaryDirectory(prefix="uqa-align-") as d:
        summary = run_rank(cfg, config["data_dir"], config["encoder_dir"], config["llm_dir"],
                           Path(d) / SAVED if rank == 0 else None, progress, RayCheckpoints(),
                           armed(config["faults"]))
        ckpt = None
        if rank == 0 and summary["status"] == "ok":
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report({"status": summary["status"], "steps": summary["steps"]}, checkpoint=ckpt)
    return summary


def train_distributed(cfg: AlignConfig, data_dir: str | Path, encoder_dir: str | Path, llm_dir: str | Path,
                      out_dir: str | Path, report: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train under Ray Train (module doc) and write `out_dir` as train.train_alignment does.

    Rank 0 reports the trained weights as the run's last checkpoint, so they reach the driver (the Tune
    trial, possibly on another node) through Ray Train's storage; the driver copies them into `out_dir`
    with steps.py's layout and summary, atomically. Progress reaches Tune through Ray's
    TuneReportCallback inside a trial; each Ray Train V2 report is a collective through a synchronisation
    actor that costs several steps' time (docs/decisions.md), hence reports every `log_every` steps only.
    `report` is unused: progress goes to Tune through Ray's callback, or to the log."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    del report
    out_dir = Path(out_dir).resolve()
    s = cfg.scaling
    # The user's DeepSpeed JSON is read here first: a bad file is an InputError naming it, before any worker
    # starts (inside a worker it would surface as a TrainingFailedError around the message).
    ds_config(cfg, s.num_workers, s.use_gpu)
    remote = "://" in s.storage  # s3://, gs://: Ray Train's storage on a cluster without a shared disk
    storage = s.storage if remote else str(Path(s.storage).resolve() if s.storage else out_dir.parent / ".ray_train")
    init_ray()
    callbacks = []
    # The check Ray's own TuneReportCallback makes (it raises outside a Tune session); no public API for it.
    if _in_tune_session():
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    t0 = time.perf_counter()
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"align": to_dict(cfg), "data_dir": str(data_dir), "encoder_dir": str(encoder_dir),
                           "llm_dir": str(llm_dir), "faults": dataclasses.asdict(armed())},
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                     resources_per_worker={"CPU": s.cpus_per_worker, **s.resources_per_worker}),
        run_config=RunConfig(name=out_dir.name, storage_path=storage, callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=s.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=s.keep_checkpoints),
                             logging_config=LoggingConfig(log_level=ray_log_level())),
    )
    print(f"[align] {out_dir.name}: {s.num_workers} Ray Train workers, ZeRO-{s.zero_stage}, "
          f"strategy {cfg.strategy}", flush=True)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        raise RuntimeError(f"alignment {out_dir.name}: a Ray Train worker failed: {e}") from e
    summary = dict(result.return_value or {})
    if not summary:
        raise RuntimeError(f"alignment {out_dir.name}: Ray Train returned no summary from rank 0")
    summary["wall_s"] = time.perf_counter() - t0  # train_s is rank 0's loop; this adds start-up and gathers

    def fill(tmp: Path) -> None:
        with result.checkpoint.as_directory() as d:
            for item in (Path(d) / SAVED).iterdir():
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)

    write_alignment(out_dir, summary, fill)
    if not remote:  # the alignment folder is the durable copy (a bucket's copy is left to its lifecycle)
        shutil.rmtree(Path(storage) / out_dir.name, ignore_errors=True)
    return summary
