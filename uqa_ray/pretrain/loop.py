"""The per-worker pretraining loop: plain torch + DeepSpeed, fed by a `Session` (Ray Train or torchrun).

Per epoch: next-item training over this rank's shard, then HR@k / NDCG@k of the last click of the eval
users (full ranking, all-reduced over ranks), throughput in positions/s and, on GPU, MFU. Checkpoints
(uqa_ray/distributed.py) carry the data position, so a restarted run continues exactly where the last
checkpoint left it. A non-finite loss on any rank stops every rank before the optimizer step, with no
checkpoint of that state. With `optim.tables=sparse` the embedding tables stay out of the engine's optimizer:
`tables.RowSparseAdam` updates the rows each step read, at the engine's lr, and its state rides in the
checkpoint beside the loop's.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from uqa_ray.config import build
from uqa_ray.data.collate import collate
from uqa_ray.data.schema import PRETRAIN_FILES
from uqa_ray.distributed import allreduce_sum, load_checkpoint, save_checkpoint
from uqa_ray.faults import armed
from uqa_ray.pretrain.baselines import train_counts
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.pretrain.ds_config import deepspeed_config, resolve_precision
from uqa_ray.pretrain.flops import flops_per_position, peak_flops
from uqa_ray.pretrain.metrics import finalize, metric_sums, target_ranks
from uqa_ray.pretrain.objective import PretrainObjective
from uqa_ray.pretrain.session import RaySession, eval_rows
from uqa_ray.pretrain.tables import RowSparseAdam, split_parameters
from uqa_ray.raysetup import quiet_train_worker

LOOP_STATE = ("global_step", "epoch", "step_in_epoch", "history", "window")  # what a checkpoint resumes
TABLES_STATE = "tables"  # the row-sparse tables' optimizer state, beside LOOP_STATE in a checkpoint


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def total_optimizer_steps(cfg: PretrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the whole run (micro-batches / grad_accum, capped by max_steps): the lr schedule's length."""
    steps = cfg.optim.epochs * steps_per_epoch // cfg.optim.grad_accum
    return min(steps, cfg.max_steps // cfg.optim.grad_accum or 1) if cfg.max_steps else steps


def build_engine(cfg: PretrainConfig, enc_cfg, on_gpu: bool, total_steps: int = 0):
    import deepspeed

    ds_cfg = deepspeed_config(cfg, on_gpu, total_steps)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    # ZeRO-3: parameters are partitioned as they are created, so a 1.2B encoder never exists whole on
    # one rank (DeepSpeed's zero.Init). The objective's init happens in module constructors.
    counts = None  # training popularity: the popularity and in-batch samplers' proposal (every rank reads it)
    if cfg.loss.kind == "sampled" and cfg.loss.sampler != "uniform":
        counts = train_counts(Path(cfg.data) / PRETRAIN_FILES["train"], enc_cfg.vocab["uni_seq_item_id"])
    with deepspeed.zero.Init(enabled=cfg.scaling.zero_stage == 3, config_dict_or_path=ds_cfg):
        model = PretrainObjective(enc_cfg, cfg.loss, counts)
    if cfg.scaling.zero_stage == 3:
        for p in model.external_parameters():
            deepspeed.zero.register_external_parameter(model, p)
    dense, sparse = split_parameters(model, cfg.optim.tables)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=dense, config=ds_cfg,
                                           dist_init_required=False)
    tables = None
    if sparse:  # after initialize: under bf16 the engine has cast the tables, and RowSparseAdam keeps fp32 masters
        from deepspeed.runtime.sparse_tensor import SparseTensor

        def reduce(params: list[torch.nn.Parameter]) -> None:  # the engine's own sparse all-reduce (a mean)
            engine.sparse_allreduce_no_retain([SparseTensor(p.grad) for p in params],
                                              dp_group=engine.seq_data_parallel_group)

        many = dist.is_initialized() and dist.get_world_size() > 1
        tables = RowSparseAdam(sparse, cfg.optim.lr, cfg.optim.betas, cfg.optim.eps, reduce if many else None)
    return engine, ds_cfg, tables


@contextlib.contextmanager
def _gathered(params: list[torch.nn.Parameter], enabled: bool):
    if not enabled:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params):
        yield


def evaluate(engine, session, cfg: PretrainConfig, enc_cfg, device: torch.device
             ) -> tuple[dict[str, float], list[list[int]]]:
    """HR@k / NDCG@k on the last click (`eval_last` clicks) of every eval user, and the eval next-item loss
    over every position of their sequences (`loss`, full softmax): each rank scores its stride of each batch
    (`session.eval_rows`), and the sums are all-reduced. Also this rank's [eval row, rank] pairs (row =
    the user's index in the eval stream, i.e. the file order, times `eval_last`, plus j for the j-th click
    from the end), for per-user results."""
    module = engine.module
    module.eval()
    keys = ["n"] + [f"{m}@{k}" for k in cfg.ks for m in ("HR", "NDCG")] + ["loss_sum", "positions"]
    sums = dict.fromkeys(keys, 0.0)
    weight = module.encoder.item_input.item_embedding.weight
    per_user, offset = [], 0
    with torch.no_grad():
        for batch in session.eval_batches():
            rows, keep = eval_rows(batch, session.rank, session.world)
            start, offset = offset, offset + batch.num_rows
            b = _to_device(collate(rows, enc_cfg.max_len), device)
            q, last, target, row = module.eval_queries(b, cfg.eval_last)
            # Under ZeRO-3 the table is gathered per batch and only AFTER the forward: the encoder's own
            # forward re-partitions it on exit, even inside an outer GatheredParameters.
            with _gathered([weight], cfg.scaling.zero_stage == 3):
                if weight.shape != (enc_cfg.vocab["uni_seq_item_id"], enc_cfg.item_dim):
                    raise RuntimeError(f"item table not gathered for evaluation: shape {tuple(weight.shape)}")
                ranks = target_ranks(last, module.item_vectors(weight), target)
                loss_sum, positions = module.eval_loss(q, b, weight)
            if not keep:
                continue
            n = cfg.eval_last  # pair key: the user's eval row x eval_last + j (j = 0: the last click)
            per_user += [[(start + session.rank + session.world * i) * n + j % n, r]
                         for j, (i, r) in enumerate(zip(row.tolist(), ranks.tolist())) if r >= 0]
            for k, v in metric_sums(ranks, cfg.ks).items():
                sums[k] += v
            sums["loss_sum"] += float(loss_sum)
            sums["positions"] += float(positions)
    module.train()
    total = dict(zip(keys, allreduce_sum([sums[k] for k in keys], device)))
    loss_sum, positions = total.pop("loss_sum"), total.pop("positions")
    metrics = finalize(total) | {"loss": loss_sum / positions if positions else math.nan, "positions": positions}
    return metrics, per_user


def gather_pairs(pairs: list[list[int]]) -> list[list[int]]:
    """Every rank's pairs, sorted (the same on every rank)."""
    if not dist.is_initialized():
        return sorted(pairs)
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, pairs)
    return sorted(p for part in out for p in part)


def train_loop(cfg_dict: dict[str, Any], session_factory=None) -> dict[str, Any] | None:
    """Entry point of every worker. `cfg_dict` is `to_dict(PretrainConfig)` plus `"_run"` facts from the
    driver (vocab, steps per epoch, baseline metrics). Returns None, or the facts of a non-finite loss."""
    run = dict(cfg_dict.pop("_run"))
    cfg = build(PretrainConfig, cfg_dict)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    if not on_gpu:
        # Ray Train gives each CPU worker its cpus_per_worker; oversubscribing the cores is slower.
        torch.set_num_threads(max(1, int(run.get("threads", 1))))
    if session_factory is None:
        quiet_train_worker()
    session = session_factory(cfg) if session_factory else RaySession(cfg)
    faults = armed(run.get("faults", {}))  # uqa_ray/faults.py (tests only)
    enc_cfg = cfg.encoder_config(run["vocab"])
    engine, ds_cfg, tables = build_engine(cfg, enc_cfg, on_gpu, total_optimizer_steps(cfg, run["steps_per_epoch"]))
    precision = resolve_precision(cfg.precision, on_gpu)
    fpp = flops_per_position(enc_cfg, cfg.loss)
    peak = peak_flops(device) if on_gpu else None

    keys = LOOP_STATE + ((TABLES_STATE,) if tables else ())
    state, resumed = load_checkpoint(engine, session, device, keys, "pretrain")
    if state and tables:
        tables.load_state_dict(state.pop(TABLES_STATE))

    def checkpoint(loop_state: dict[str, Any], metrics: dict[str, Any]) -> None:
        extra = {TABLES_STATE: tables.state_dict()} if tables else {}
        save_checkpoint(engine, session, dict(loop_state) | extra, metrics)

    state = state or {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": []}
    if session.rank == 0 and state["global_step"]:
        print(f"[pretrain] resumed at epoch {state['epoch'] + 1} step {state['step_in_epoch']} "
              f"(global step {state['global_step']})", flush=True)
    steps_per_epoch = run["steps_per_epoch"]
    log_every = max(1, steps_per_epoch // 4)  # a progress line every quarter epoch

    while state["epoch"] < cfg.optim.epochs:
        epoch = state["epoch"]
        # loss * n and n since the epoch began; restored on resume so the epoch's mean stays exact.
        window = list(state.get("window", [0.0, 0.0]))
        clock, positions = None, 0.0
        for i, batch in enumerate(session.train_batches(epoch)):
            if i < state["step_in_epoch"]:
                continue  # the data position of a resumed run: these batches were trained already
            faults.maybe_die(state["global_step"], session.rank, run["run_dir"])
            out = engine(_to_device(collate(batch, enc_cfg.max_len), device))
            loss, n = out["loss"], float(out["n"])
            loss = faults.poison(loss, state["global_step"], session.rank, session.world)
            finite = math.isfinite(loss.item())
            # One small all-reduce per step: every rank must learn that ANY rank diverged, or the
            # others would block in the next ZeRO collective.
            s_loss, s_n, bad = allreduce_sum([loss.item() * n if finite else 0.0, n, 0.0 if finite else 1.0], device)
            if bad:
                # No checkpoint of this state: the last one reported stays the run's latest, good one. Ray
                # Train V2 keeps only checkpointed metrics, so the facts reach the driver as the return value.
                diverged = {"status": "diverged", "step": state["global_step"], "epoch": epoch + 1,
                            "bad_ranks": int(bad), "world": session.world}
                if session.rank == 0:
                    print(f"[pretrain] non-finite loss at step {state['global_step']} on {int(bad)} of "
                          f"{session.world} ranks: stopping", flush=True)
                session.report(diverged, None)
                return diverged
            engine.backward(loss)
            if tables and engine.is_gradient_accumulation_boundary():
                tables.step(engine.get_lr()[0])  # the lr the engine's optimizer takes this step
            engine.step()
            window[0] += s_loss
            window[1] += s_n
            state["window"] = list(window)
            # Throughput excludes each epoch's first step (allocator warm-up, kernel selection). The
            # `.item()` above synchronizes the device every step, so the clock is honest on GPU too.
            if clock is None:
                clock, positions = time.perf_counter(), 0.0
            else:
                positions += s_n
            state["step_in_epoch"] += 1
            state["global_step"] += 1
            done = cfg.max_steps and state["global_step"] >= cfg.max_steps
            if session.rank == 0 and (state["step_in_epoch"] % log_every == 0):
                print(
                    f"[pretrain] epoch {epoch + 1}/{cfg.optim.epochs} step {state['step_in_epoch']}/"
                    f"{steps_per_epoch} loss {window[0] / max(window[1], 1):.4f}",
                    flush=True,
                )
            every = cfg.scaling.checkpoint_every  # 0: only at each epoch's end (below)
            if every and state["global_step"] % every == 0 and not done:
                checkpoint(state, {"epoch": epoch + 1, "step": state["global_step"], **resumed})
            if done:
                break
        elapsed = time.perf_counter() - clock if clock is not None else 0.0
        finished = cfg.max_steps and state["global_step"] >= cfg.max_steps
        eval_metrics, eval_ranks = evaluate(engine, session, cfg, enc_cfg, device)
        metrics = {
            "epoch": epoch + 1,
            "step": state["global_step"],
            "train_loss": window[0] / max(window[1], 1.0),
            "positions_per_s": positions / elapsed if elapsed > 0 else math.nan,
            "precision": precision,
            "zero_stage": cfg.scaling.zero_stage,
            **{f"eval/{k}": v for k, v in eval_metrics.items()},
            **{f"baseline/{b}/{k}": v for b, m in run.get("baselines", {}).items() for k, v in m.items()},
            **resumed,  # where this process resumed, and any checkpoint it had to skip
        }
        if peak:
            metrics["mfu"] = metrics["positions_per_s"] * fpp / (peak * session.world)
        history = state["history"] + [metrics["train_loss"]]
        metrics["loss_history"] = history
        state = {"epoch": epoch + 1, "step_in_epoch": 0, "global_step": state["global_step"], "history": history}
        if finished:
            state["epoch"] = cfg.optim.epochs
        metrics["final"] = state["epoch"] >= cfg.optim.epochs
        if metrics["final"]:  # per-user ranks once, for CIs and paired comparisons (trainer writes them)
            metrics["eval_ranks"] = gather_pairs(eval_ranks)
        checkpoint(state, metrics)
        if session.rank == 0:
            hr = metrics.get("eval/HR@10", math.nan)
            print(
                f"[pretrain] epoch {epoch + 1} done: loss {metrics['train_loss']:.4f} HR@10 {hr:.4f} "
                f"{metrics['positions_per_s']:.0f} positions/s",
                flush=True,
            )
