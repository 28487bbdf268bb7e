"""`train_alignment`: align one frozen encoder to an LLM through an adapter (plain torch, one process).

Streams the alignment questions of TRAIN users (align/data.py: the memory-mapped official
align_data_train.arrow + questions_train.parquet), batch by batch: the encoder input is collated from
the Arrow row, the chat comes from its `text` column (or from the parquet for the other answer format),
and `AlignedModel` returns the masked LM loss. Optimiser: AdamW with the official betas and gradient
clip (UQABENCH.md section 4); two parameter groups so that the LLM's own weights (`full`) get `llm_lr`
while the adapter (and LoRA) get `lr`.

A NaN or inf loss (or gradient norm) stops the run with status "diverged" and the step it happened at
(the paper's Q-Former NaNs); nothing is saved then, because the weights are poisoned. On success the
output folder holds `adapter/` (align/adapters save format), `lora/` (peft adapter) or `llm/` (full
fine-tuning: the whole LLM + tokenizer, loadable with `load_llm`), and `train.json` (the summary also
returned). The folder is written atomically: a crash never leaves a half-written alignment behind.

Runs inside one Ray Tune trial (tune/trial.py) on the trial's CPUs or GPU. Multi-GPU full fine-tuning
under Ray Train + DeepSpeed is not wired here (see the phase-2 report); `full` runs on one device.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from uqa_ray.align.adapters import build_adapter, load_adapter, save_adapter
from uqa_ray.align.config import AlignConfig
from uqa_ray.align.data import QuestionSplit
from uqa_ray.align.llm import default_device, load_llm
from uqa_ray.align.model import AlignedModel, DivergedError
from uqa_ray.align.soft_prompt import encode_chat
from uqa_ray.config import to_dict
from uqa_ray.encoders import load_encoder
from uqa_ray.encoders.config import input_columns
from uqa_ray.io import atomic_path, write_json

SUMMARY_FILE = "train.json"
ADAPTER_DIR, LORA_DIR, LLM_DIR = "adapter", "lora", "llm"


def _optimizer(model: AlignedModel, cfg: AlignConfig) -> torch.optim.Optimizer:
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
    """(AlignedModel with a fresh, seeded adapter, tokenizer, encoder config)."""
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


def train_alignment(cfg: AlignConfig, data_dir: str | Path, encoder_dir: str | Path, llm_dir: str | Path,
                    out_dir: str | Path, report: Callable[[dict], None] | None = None) -> dict:
    """Align, save into `out_dir`, return the summary (module doc). `report(metrics)` gets progress."""
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    data = QuestionSplit(data_dir, "train")
    model, tok, enc_cfg = build_model(cfg, encoder_dir, llm_dir)
    columns = list(input_columns(enc_cfg.input_mode))
    max_len = min(cfg.max_len, enc_cfg.max_len)
    opt = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    summary: dict[str, Any] = {
        "config": to_dict(cfg), "data_dir": str(data_dir), "encoder_dir": str(encoder_dir), "llm_dir": str(llm_dir),
        "train_questions": len(data), "steps_planned": total, "n_soft": model.n_soft,
        "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
    }
    step, losses, status, reason = 0, [], "ok", None
    model.train()
    with torch.random.fork_rng(devices=[]):  # LoRA dropout etc. draw from a seeded stream
        torch.manual_seed(cfg.seed)
        try:
            for epoch in range(cfg.epochs):
                for rows in data.batches(cfg.batch_size, cfg.seed, epoch):
                    if step >= total:
                        break
                    step += 1
                    if step == cfg.nan_at_step:
                        with torch.no_grad():  # fault injection: a poisoned weight, as a real blow-up
                            next(model.adapter.parameters()).fill_(float("nan"))
                    chats = [encode_chat(tok, m, cfg.placement, cfg.label_mode)
                             for m in data.messages(rows, cfg.answer_format)]
                    loss = model({"seq": data.sequences(rows, columns, max_len), "chats": chats})
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    norm = torch.nn.utils.clip_grad_norm_(model.trainable_parameters(),
                                                          cfg.grad_clip if cfg.grad_clip else float("inf"))
                    if not bool(torch.isfinite(norm)):
                        raise DivergedError(f"non-finite gradient norm {float(norm)}")
                    opt.step()
                    losses.append(loss.item())
                    if report and (step % cfg.log_every == 0 or step == total):
                        report({"step": step, "epoch": epoch, "loss": sum(losses[-cfg.log_every:]) /
                                len(losses[-cfg.log_every:])})
        except DivergedError as e:
            status, reason = "diverged", f"step {step}: {e}"
    model.eval()
    summary.update({
        "status": status, "reason": reason, "steps": step, "train_s": time.perf_counter() - t0,
        "loss_first": losses[: cfg.log_every], "loss_last": losses[-cfg.log_every:],
        "loss_curve": [sum(losses[i:i + cfg.log_every]) / len(losses[i:i + cfg.log_every])
                       for i in range(0, len(losses), cfg.log_every)],
    })
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if status == "ok":
            save_adapter(model.adapter, tmp / ADAPTER_DIR)
            if cfg.strategy == "lora":
                model.llm.save_pretrained(str(tmp / LORA_DIR))
            elif cfg.strategy == "full":
                model.llm.save_pretrained(str(tmp / LLM_DIR))
                tok.save_pretrained(str(tmp / LLM_DIR))
        write_json(tmp / SUMMARY_FILE, summary)
    return summary
