"""Ray Train wiring of a pretraining run: datasets, workers, checkpoints, resume, fp32 export.

`pretrain(cfg)` streams the prepared Arrow files with Ray Data into a `TorchTrainer` whose workers run
`loop.train_loop` with DeepSpeed. The run lives at `<storage>/<name>`: Ray Train keeps its checkpoints
there, and a rerun with the same name (or a worker restart under `max_failures`) resumes from the latest
one. At the end the last checkpoint is consolidated to an fp32 encoder export (`<run>/encoder/`, ZeRO
shards gathered by DeepSpeed's own zero_to_fp32) that the alignment stage loads without Ray or DeepSpeed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from uqa_ray.config import content_hash, source_hash, to_dict
from uqa_ray.data.schema import META_FILE, PRETRAIN_FILES
from uqa_ray.data.stream import read_sequences
from uqa_ray.data.windows import count_windows, sliding_windows
from uqa_ray.distributed import CKPT_TAG
from uqa_ray.encoders.config import input_columns
from uqa_ray.encoders.export import CONFIG_FILE, save_encoder
from uqa_ray.faults import armed
from uqa_ray.io import InputError, say, write_json
from uqa_ray.pretrain.baselines import heuristic_baselines
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.pretrain.loop import TABLES_STATE, train_loop
from uqa_ray.pretrain.objective import PretrainObjective
from uqa_ray.stage import Stage

EXPORT_DIR = "encoder"
SUMMARY_FILE = "summary.json"
RANKS_FILE = "eval_ranks.json"  # per eval target (eval_last per user): the model's and each baseline's 0-based rank
STATUS_FILE = "status.json"
WEIGHTS_CODE = ("uqa_ray.data", "uqa_ray.encoders", "uqa_ray.pretrain")


@dataclasses.dataclass
class PretrainResult:
    run_dir: Path
    encoder_dir: Path | None
    status: str  # ok | diverged | failed
    metrics: dict[str, Any]
    reused: bool = False
    reason: str = ""  # why, unless ok


def read_meta(data: str | Path) -> dict[str, Any]:
    path = Path(data) / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the prepared data's meta.json ({e}); run `uqa-ray prepare`") from e


def run_name(cfg: PretrainConfig) -> str:
    # Keyed by everything that changes the weights, so a rerun resumes: the config but where it runs
    # (`scaling`; its ZeRO stage and DeepSpeed JSON kept, as they shape the checkpoint it resumes from), and
    # the code of the packages that build, feed and train the model (`WEIGHTS_CODE`), so a code change
    # never silently reuses a run that older code finished.
    key = {**to_dict(cfg), "name": "", "scaling": {"zero_stage": cfg.scaling.zero_stage,
                                                   "deepspeed": cfg.scaling.deepspeed}}
    key_hash = content_hash(key, source_hash(*WEIGHTS_CODE))
    return cfg.name or f"{cfg.preset}-L{cfg.max_len}-{cfg.input_mode}-{cfg.loss.kind}-{key_hash}"


def per_user_ranks(model: list[list[int]], baselines: dict[str, list]) -> dict[str, list[int]]:
    """{"row", "model", <baseline>...}: one entry per scored target ("row": the eval user's row x
    `eval_last` + j, j = 0 for the last click; with eval_last 1, the user's row). Model and baselines must
    have scored the same targets; anything else is a bug, not a result."""
    rows = [r for r, _ in model]
    if rows != baselines["row"]:
        raise RuntimeError(f"the model scored {len(rows)} eval users and the baselines {len(baselines['row'])}: "
                           "they must be the same users")
    return {"row": rows, "model": [k for _, k in model]} | {b: v for b, v in baselines.items() if b != "row"}


def export_encoder(ckpt_dir: Path, cfg: PretrainConfig, enc_cfg, out: Path) -> Path:
    """Consolidate a DeepSpeed checkpoint to an fp32 encoder export."""
    tag_dir = ckpt_dir / CKPT_TAG
    whole = tag_dir / "mp_rank_00_model_states.pt"  # the module whole (ZeRO-0/1/2; ZeRO-3 writes shards only)
    saved = torch.load(whole, map_location="cpu", weights_only=False) if whole.exists() else {"module": {}}
    state = dict(saved["module"])
    if any(tag_dir.glob("*optim_states.pt")) and cfg.scaling.zero_stage > 0:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # Gathers every rank's fp32 master partition (ZeRO-1/2/3): the exact weights, even under bf16. It
        # holds the engine optimizer's parameters only: row-sparse tables come from the module state, or
        # (tables held in bf16) from their fp32 masters in the loop's state.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its progress
            state.update(get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=CKPT_TAG))
        state.update(saved.get(TABLES_STATE, {}).get("masters", {}))
    with torch.device("meta"):  # only the encoder is exported: the loss (and a sampler's proposal) plays no part
        model = PretrainObjective(enc_cfg)
    # zero_to_fp32 returns parameters only; the objective's sole buffer is the sampler's step counter.
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False, assign=True)
    missing = [n for n, t in model.encoder.state_dict().items() if t.is_meta]
    if missing:
        raise RuntimeError(f"checkpoint {ckpt_dir} lacks encoder tensors {missing[:5]}")
    return save_encoder(model.encoder, enc_cfg, out)


def _cpus_per_worker(cfg: PretrainConfig) -> float:
    """Leave one CPU for Ray Data: training workers that reserve (nearly) every CPU starve the read tasks
    that feed them and the run deadlocks (seen on a 2-core machine with 2 workers x 1 CPU, and with
    2 x 0.75: Ray Data's budget is what Ray Train leaves, and a read task needs a whole CPU)."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    want = cfg.scaling.cpus_per_worker
    if cfg.scaling.use_gpu or total - want * cfg.scaling.num_workers >= 1.0:
        return want
    fit = max(0.1, (total - 1.0) / cfg.scaling.num_workers)
    say(f"[pretrain] {total:g} CPUs: {cfg.scaling.num_workers} workers get {fit:.2f} CPU each (asked {want:g}), "
        "leaving room for Ray Data")
    return fit


def _diverged(
    run_dir: Path, name: str, stopped: dict[str, Any], metrics: dict[str, Any], checkpoint
) -> PretrainResult:
    """A non-finite loss stopped the loop (which checkpoints no state of that step): say where, and which
    checkpoint is the last good one. Ray Train keeps it, and a rerun of the run resumes from it."""
    if "step" in stopped:
        where = f"at step {stopped['step']} (epoch {stopped['epoch']}, on {stopped['bad_ranks']} of " \
                f"{stopped['world']} ranks)"
    else:  # no return value from the loop (it cannot tell us): only divergence ends it without "final"
        where = "(step unknown: the loop stopped without a final checkpoint)"
    last = None
    if checkpoint is not None:
        last = {"path": checkpoint.path, "step": metrics.get("step"), "epoch": metrics.get("epoch")}
    kept = f"last good checkpoint: step {last['step']} at {last['path']}" if last else "no checkpoint was taken"
    reason = f"non-finite loss {where}; {kept}"
    write_json(run_dir / STATUS_FILE, {
        "status": "diverged", "reason": reason, "step": stopped.get("step"), "epoch": stopped.get("epoch"),
        "last_checkpoint": last, "last_checkpoint_metrics": metrics,
    })
    say(f"[pretrain] {name}: DIVERGED: {reason}")
    out = {**metrics, "diverged_at_step": stopped.get("step"), "last_checkpoint": last}
    return PretrainResult(run_dir, None, "diverged", out, reason=reason)


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from uqa_ray.raysetup import init_ray, ray_log_level

    if not cfg.data:
        raise InputError("pretrain: no prepared data folder given (data=...)")
    meta = read_meta(cfg.data)
    vocab = meta.get("vocab") or {}
    enc_cfg = cfg.encoder_config(vocab)
    name = run_name(cfg)
    storage = Path(cfg.scaling.storage).resolve()
    run_dir = storage / name
    export = run_dir / EXPORT_DIR
    # Finished = the export, then the summary written after it (a diverged or failed run writes neither).
    stage = Stage(f"[pretrain] {name}", run_dir, (f"{EXPORT_DIR}/{CONFIG_FILE}", SUMMARY_FILE))
    if stage.done():
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        say(f"[pretrain] {name}: reusing finished run ({run_dir})")
        return PretrainResult(run_dir, export, summary["status"], summary["metrics"], reused=True)

    init_ray()
    columns = list(input_columns(enc_cfg.input_mode))
    files = {s: Path(cfg.data) / f for s, f in PRETRAIN_FILES.items()}
    # Both files are opened and checked here whatever the feed (a bad file is an InputError naming it);
    # the datasets are lazy, so with `feed: arrow` they are dropped unread below.
    datasets = {"train": read_sequences(files["train"], columns), "eval": read_sequences(files["eval"], columns)}
    if cfg.eval_users:
        datasets["eval"] = datasets["eval"].limit(cfg.eval_users)
    n_train = count_windows(files["train"], enc_cfg.max_len, cfg.windows)
    world = cfg.scaling.num_workers
    steps_per_epoch = (n_train // world) // cfg.optim.micro_batch
    if steps_per_epoch < 1:
        raise InputError(
            f"{files['train']}: {n_train} users cannot fill one micro-batch of {cfg.optim.micro_batch} on "
            f"each of {world} workers"
        )
    t0 = time.perf_counter()
    baselines, baseline_ranks = heuristic_baselines(files["train"], files["eval"], vocab["uni_seq_item_id"],
                                                    enc_cfg.max_len, cfg.ks, cfg.eval_users, cfg.eval_last)
    if cfg.windows == "sliding":
        datasets["train"] = datasets["train"].map_batches(sliding_windows, fn_kwargs={"max_len": enc_cfg.max_len},
                                                          batch_format="pyarrow")
    if cfg.feed == "arrow":
        datasets = {}  # each worker reads the Arrow files itself (session.ArrowRows)
    threads = max(1, int(cfg.scaling.cpus_per_worker))
    loop_cfg = {
        **to_dict(cfg),
        "_run": {"vocab": vocab, "steps_per_epoch": steps_per_epoch, "baselines": baselines,
                 "run_dir": str(run_dir), "threads": threads, "faults": dataclasses.asdict(armed())},
    }
    resources = {"CPU": _cpus_per_worker(cfg), **cfg.scaling.resources_per_worker}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(
            num_workers=world, use_gpu=cfg.scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.scaling.keep_checkpoints),
            logging_config=LoggingConfig(log_level=ray_log_level()),
        ),
        datasets=datasets,
        # preserve_order makes the equal split across workers deterministic (Ray Data's OutputSplitter
        # ignores locality then), so the same seed gives the same shards and a resume the same batches.
        # Eval is not split: an equal split drops the remainder rows, so every worker streams all of it
        # and scores its own stride of rows (loop.evaluate): every eval user once, whatever the world.
        dataset_config=DataConfig(datasets_to_split=["train"] if datasets else [],
                                  execution_options=ExecutionOptions(preserve_order=True)),
    )
    say(f"[pretrain] {name}: {world} workers, ZeRO-{cfg.scaling.zero_stage}, {steps_per_epoch} steps/epoch")
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        write_json(run_dir / STATUS_FILE, {"status": "failed", "reason": str(e)[:2000]})
        say(f"[pretrain] {name}: FAILED: {str(e)[:2000]}")
        return PretrainResult(run_dir, None, "failed", {"error": str(e)[:2000]}, reason=str(e)[:2000])
    metrics = dict(result.metrics or {})  # Ray Train V2: the metrics of the latest checkpoint
    stopped = getattr(result, "return_value", None) or {}  # rank 0's return value (loop.train_loop)
    if stopped.get("status") == "diverged" or not metrics.get("final"):
        return _diverged(run_dir, name, stopped, metrics, result.checkpoint)
    write_json(run_dir / RANKS_FILE, per_user_ranks(metrics.pop("eval_ranks", []), baseline_ranks))
    with result.checkpoint.as_directory() as d:
        export_encoder(Path(d), cfg, enc_cfg, export)
    metrics["wall_s"] = time.perf_counter() - t0
    summary = {"status": "ok", "run": name, "config": to_dict(cfg), "encoder": to_dict(enc_cfg), "metrics": metrics}
    write_json(run_dir / SUMMARY_FILE, summary)
    write_json(run_dir / STATUS_FILE, {"status": "ok", "step": metrics.get("step")})  # replaces a stale one
    stage.check()
    for skipped in metrics.get("skipped_checkpoints", []):
        say(f"[pretrain] {name}: WARNING: resumed past a checkpoint that could not be loaded: {skipped}")
    hr = metrics.get("eval/HR@10", math.nan)
    pop, recent = (baselines[b].get("HR@10", math.nan) for b in ("most_popular", "recent_popular"))
    say(f"[pretrain] {name}: done in {metrics['wall_s']:.0f}s, HR@10 {hr:.4f} (most-popular {pop:.4f}, "
        f"recent-then-popular {recent:.4f}), export {export}")
    return PretrainResult(run_dir, export, "ok", metrics)
