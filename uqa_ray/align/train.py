"""`train_alignment`: align one frozen encoder to an LLM through an adapter (plain torch, one process).

Streams the alignment questions of TRAIN users (align/data.py: the memory-mapped official
align_data_train.arrow + questions_train.parquet), batch by batch: the encoder input is collated from
the Arrow row, the chat comes from its `text` column (or from the parquet for the other answer format),
and `AlignedModel` returns the masked LM loss; steps, optimiser and the saved folder are steps.py's.

A NaN or inf loss (or gradient norm) stops the run with status "diverged" and the step it happened at
(the paper's Q-Former NaNs); nothing is saved then, because the weights are poisoned.

Where it runs is `cfg.scaling` (uqa_ray/scaling.py): by default inside the Ray Tune trial's own process
(tune/trial.py) on its CPUs or GPU; with `scaling.num_workers` >= 1 as a Ray Train TorchTrainer whose
workers each hold a DeepSpeed ZeRO engine (align/distributed.py: a multi-GPU full fine-tune of a 3B
LLM). Both compute the same step (on CPU, fp32, the losses agree to ~1e-7); on GPU, both bf16, DeepSpeed
steps fp32 master weights where this path updates the bf16 LLM weights of `full` directly.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from uqa_ray.align.config import AlignConfig
from uqa_ray.align.data import QuestionSplit
from uqa_ray.align.distributed import train_distributed
from uqa_ray.align.model import DivergedError
from uqa_ray.align.steps import (Steps, batch_inputs, build_model, close_summary, new_summary, optimizer,
                                 save_trained, write_alignment)
from uqa_ray.encoders.config import input_columns
from uqa_ray.faults import armed


def train_alignment(cfg: AlignConfig, data_dir: str | Path, encoder_dir: str | Path, llm_dir: str | Path,
                    out_dir: str | Path, report: Callable[[dict], None] | None = None) -> dict:
    """Align, save into `out_dir`, return the summary (module doc). `report(metrics)` gets progress."""
    if cfg.scaling.num_workers:
        return train_distributed(cfg, data_dir, encoder_dir, llm_dir, out_dir, report)
    t0 = time.perf_counter()
    faults = armed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = QuestionSplit(data_dir, "train")
    steps, status, reason = Steps(cfg, data, report), "ok", None
    with torch.random.fork_rng(devices=[]):  # LoRA's init and dropout draw from a seeded stream
        torch.manual_seed(cfg.seed)
        model, tok, enc_cfg = build_model(cfg, encoder_dir, llm_dir)
        columns = list(input_columns(enc_cfg.input_mode))
        max_len = min(cfg.max_len, enc_cfg.max_len)
        opt = optimizer(model, cfg)
        summary = new_summary(cfg, data, model, (data_dir, encoder_dir, llm_dir))
        model.train()
        try:
            for epoch, rows in steps:
                faults.poison_weights(model.adapter, steps.step)
                loss = model(batch_inputs(data, rows, tok, cfg, columns, max_len))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(model.trainable_parameters(),
                                                      cfg.grad_clip if cfg.grad_clip else float("inf"))
                if not bool(torch.isfinite(norm)):
                    raise DivergedError(f"non-finite gradient norm {float(norm)}")
                opt.step()
                steps.done(loss.item(), epoch)
        except DivergedError as e:
            status, reason = "diverged", f"step {steps.step}: {e}"
    model.eval()
    close_summary(summary, cfg, status, reason, steps, t0)
    return write_alignment(out_dir, summary, lambda tmp: save_trained(model, tok, cfg.strategy, tmp))
