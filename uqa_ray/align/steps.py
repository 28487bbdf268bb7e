"""The alignment step library: what the one-process trainer (train.py) and the Ray Train + DeepSpeed
trainer (distributed.py) share, so that both train the same steps and save the same folder.

Optimiser: AdamW with the official betas (UQABENCH.md section 4), two parameter groups so that the LLM's
own weights (`full`) get `llm_lr` while the adapter (and LoRA) get `lr`. `Steps` walks the seeded global
batches of the TRAIN questions (align/data.py) and keeps the losses. An alignment folder holds
`adapter/` (align/adapters save format), `lora/` (peft adapter) or `llm/` (full fine-tuning: the whole
LLM + tokenizer, loadable with `load_llm`), and `train.json` (the summary); it is written atomically, so
a crash never leaves a half-written alignment behind.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from uqa_ray.align.adapters import build_adapter, load_adapter, save_adapter
from uqa_ray.align.config import AlignConfig
from uqa_ray.align.data import QuestionSplit
from uqa_ray.align.llm import default_device, load_llm
from uqa_ray.align.model import AlignedModel
from uqa_ray.align.soft_prompt import encode_chat
from uqa_ray.config import to_dict
from uqa_ray.encoders import load_encoder
from uqa_ray.io import atomic_path, write_json

SUMMARY_FILE = "train.json"
ADAPTER_DIR, LORA_DIR, LLM_DIR = "adapter", "lora", "llm"


def optimizer(model: AlignedModel, cfg: AlignConfig) -> torch.optim.Optimizer:
    adapter = [p for p in model.adapter.parameters() if p.requires_grad]
    ids = {id(p) for p in adapter}
    llm = [p for p in model.llm.parameters() if p.requires_grad and id(p) not in ids]
    # LoRA matrices are new, small and start at zero (B = 0): they take the adapter's lr, as peft
    # recipes do; the LLM's own pretrained weights (full fine-tuning) take the small llm_lr.
    llm_lr = cfg.llm_lr if cfg.strategy == "full" else cfg.lr
    groups = [{"params": adapter, "lr": cfg.lr}] + ([{"params": llm, "lr": llm_lr}] if llm else [])
    return torch.optim.AdamW(groups, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_model(cfg: AlignConfig, encoder_dir: str | Path, llm_dir: str | Path,
                device: torch.device | None = None) -> tuple[AlignedModel, Any, Any]:
    """(AlignedModel with a fresh, seeded adapter, tokenizer, encoder config). LoRA's own init draws from
    torch's global stream: callers seed it first (every rank must build the same weights)."""
    device = device or default_device()
    encoder, enc_cfg = load_encoder(encoder_dir, device)
    llm, tok = load_llm(llm_dir, device=device)
    adapter = build_adapter(cfg.adapter_config(enc_cfg.d_model, llm.config.hidden_size), seed=cfg.seed)
    model = AlignedModel(encoder, adapter.to(device), llm, cfg.strategy, tok.pad_token_id, cfg.lora)
    return model, tok, enc_cfg


def load_aligned(out_dir: str | Path, encoder_dir: str | Path, llm_dir: str | Path,
                 device: torch.device | None = None) -> tuple[AlignedModel, Any, Any]:
    """The trained system saved by `train_alignment` (adapter + LoRA or fine-tuned LLM), eval mode."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    if summary.get("status") != "ok":
        raise ValueError(f"{out_dir}: alignment status {summary.get('status')!r}, nothing to load")
    device = device or default_device()
    encoder, enc_cfg = load_encoder(encoder_dir, device)
    strategy = summary["config"]["strategy"]
    llm, tok = load_llm(out_dir / LLM_DIR if strategy == "full" else llm_dir, device=device)
    if strategy == "lora":
        from peft import PeftModel

        llm = PeftModel.from_pretrained(llm, str(out_dir / LORA_DIR)).eval()
    adapter = load_adapter(out_dir / ADAPTER_DIR, device)
    # "adapter" freezes everything but the adapter; the LoRA/LLM weights are already in place.
    model = AlignedModel(encoder, adapter, llm, "adapter", tok.pad_token_id)
    model.strategy = strategy
    return model.eval(), tok, enc_cfg


def total_steps(cfg: AlignConfig, n_rows: int) -> int:
    steps = cfg.epochs * math.ceil(n_rows / cfg.batch_size)
    return min(cfg.max_steps, steps) if cfg.max_steps else steps


class Steps:
    """The step schedule and loss bookkeeping of both training paths: the seeded global batches of each
    epoch up to `total_steps`, skipping (and counting) a batch of fewer than `min_rows` rows; the losses;
    progress reports every `log_every` steps and at the last."""

    def __init__(self, cfg: AlignConfig, data: QuestionSplit, report: Callable[[dict], None] | None,
                 min_rows: int = 1):
        self.cfg, self.data, self.report, self.min_rows = cfg, data, report, min_rows
        self.total = total_steps(cfg, len(data))
        self.step, self.skipped, self.losses = 0, 0, []
        self.start = 0  # steps already trained by the checkpoint this run resumed from (`resume`)
        self.started: float | None = None  # perf_counter at the first step: set-up ends there

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the schedule: the step reached and the losses so far."""
        return {"step": self.step, "losses": list(self.losses)}

    def resume(self, state: dict[str, Any]) -> None:
        """Continue after `state`'s step: the batches before it are walked again but not yielded."""
        self.start, self.losses = int(state["step"]), list(state["losses"])

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """(epoch, rows) of each step; `self.step` is the step's number (from 1) inside the body."""
        for epoch in range(self.cfg.epochs):
            for rows in self.data.batches(self.cfg.batch_size, self.cfg.seed, epoch):
                if self.step >= self.total:
                    return
                if len(rows) < self.min_rows:
                    self.skipped += len(rows)
                    continue
                self.step += 1
                if self.step <= self.start:
                    continue
                if self.started is None:
                    self.started = time.perf_counter()
                yield epoch, rows

    def done(self, loss: float, epoch: int) -> None:
        self.losses.append(loss)
        k = self.cfg.log_every
        if self.report and (self.step % k == 0 or self.step == self.total):
            self.report({"step": self.step, "epoch": epoch, "loss": sum(self.losses[-k:]) / len(self.losses[-k:])})


def batch_inputs(data: QuestionSplit, rows, tok, cfg: AlignConfig, columns: list[str], max_len: int) -> dict:
    """What AlignedModel.forward takes for these rows: the encoder batch and the encoded chats."""
    chats = [encode_chat(tok, m, cfg.placement, cfg.label_mode) for m in data.messages(rows, cfg.answer_format)]
    return {"seq": data.sequences(rows, columns, max_len), "chats": chats}


def new_summary(cfg: AlignConfig, data: QuestionSplit, model: AlignedModel, dirs: tuple) -> dict[str, Any]:
    data_dir, encoder_dir, llm_dir = (str(d) for d in dirs)
    return {
        "config": to_dict(cfg), "data_dir": data_dir, "encoder_dir": encoder_dir, "llm_dir": llm_dir,
        "train_questions": len(data), "steps_planned": total_steps(cfg, len(data)), "n_soft": model.n_soft,
        "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
    }


def close_summary(summary: dict, cfg: AlignConfig, status: str, reason: str | None, steps: Steps,
                  t0: float) -> dict[str, Any]:
    k, losses, end = cfg.log_every, steps.losses, time.perf_counter()
    started = steps.started or end
    summary.update({
        "status": status, "reason": reason, "steps": steps.step, "train_s": end - t0,
        # set-up (loading, DeepSpeed's initialize) vs the steps themselves (progress reports included)
        "setup_s": started - t0, "step_s": (end - started) / max(steps.step - steps.start, 1),
        "loss_first": losses[:k], "loss_last": losses[-k:],
        "loss_curve": [sum(losses[i:i + k]) / len(losses[i:i + k]) for i in range(0, len(losses), k)],
    })
    return summary


def save_trained(model: AlignedModel, tok, strategy: str, folder: Path) -> None:
    """What this strategy trained, into `folder` (which must exist): the module doc's layout."""
    save_adapter(model.adapter, folder / ADAPTER_DIR)
    if strategy == "lora":
        model.llm.save_pretrained(str(folder / LORA_DIR))
    elif strategy == "full":
        model.llm.save_pretrained(str(folder / LLM_DIR))
        tok.save_pretrained(str(folder / LLM_DIR))


def write_alignment(out_dir: str | Path, summary: dict, fill: Callable[[Path], None] | None) -> dict:
    """The alignment folder, atomically: `fill(tmp)` writes the weights (only when the status is ok)."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if summary["status"] == "ok" and fill is not None:
            fill(tmp)
        write_json(tmp / SUMMARY_FILE, summary)
    return summary
