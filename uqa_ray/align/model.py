"""The aligned model: frozen encoder -> adapter -> soft tokens -> causal LM, under one of three strategies.

Strategies (UQABENCH.md section 4, table 4), a table of what trains:
  adapter  official (`--only_tune_adapter` in the release): encoder and LLM frozen, the adapter alone
           trains; gradients still flow THROUGH the frozen LLM into the soft tokens.
  full     LLM + adapter train, encoder frozen. (The release's non-adapter run also trains the encoder
           at lr 1e-6; the paper's "Full-FT" row is about the LLM, and a frozen encoder keeps the
           comparison between encoders clean, so we freeze it.)
  lora     peft LoRA on the LLM's linear layers + the adapter; the LLM's own weights stay frozen.
Frozen modules stay in eval mode even when the aligned model trains: a frozen part is a fixed function
(the release leaves the encoder's dropout on during alignment; we do not).

`forward(batch)` returns the mean cross-entropy over the labelled tokens (the release's
CrossEntropyLoss mean) in fp32. A NaN or inf loss raises `DivergedError` - the paper's Q-Former NaNs -
so that a trial is marked "diverged" and never reports a silent number.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uqa_ray import vocab
from uqa_ray.align.soft_prompt import IGNORE, EncodedChat, build_inputs, llm_kwargs

STRATEGIES = tuple(vocab.STRATEGIES)
# strategy -> (LLM base weights trainable, LoRA added)
_TRAINS = {"adapter": (False, False), "full": (True, False), "lora": (False, True)}


class DivergedError(RuntimeError):
    """The training loss became NaN or inf; the trial's status is "diverged"."""


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = "all-linear"  # peft's keyword: every linear layer except the output head

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError(f"LoRA r and alpha must be >= 1, got r={self.r} alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def _encoder_dim(encoder: nn.Module) -> int | None:
    cfg = getattr(encoder, "cfg", None) or getattr(encoder, "config", None)
    return getattr(cfg, "d_model", None)


class AlignedModel(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        adapter: nn.Module,
        llm: nn.Module,
        strategy: str = "adapter",
        pad_id: int = 0,
        lora: LoraSettings = LoraSettings(),
    ):
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        llm_dim = llm.get_input_embeddings().embedding_dim
        if adapter.cfg.llm_dim != llm_dim:
            raise ValueError(f"adapter llm_dim {adapter.cfg.llm_dim} != the LLM's hidden size {llm_dim}")
        enc_dim = _encoder_dim(encoder)
        if enc_dim is not None and enc_dim != adapter.cfg.enc_dim:
            raise ValueError(f"adapter enc_dim {adapter.cfg.enc_dim} != the encoder's d_model {enc_dim}")
        self.strategy, self.pad_id = strategy, pad_id
        llm_trains, add_lora = _TRAINS[strategy]
        encoder.requires_grad_(False)
        llm.requires_grad_(llm_trains)
        if add_lora:
            from peft import LoraConfig, get_peft_model

            llm = get_peft_model(llm, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, task_type="CAUSAL_LM"))
        adapter.requires_grad_(True)
        self.encoder, self.adapter, self.llm = encoder, adapter, llm
        self.train(False)

    def train(self, mode: bool = True) -> "AlignedModel":
        super().train(mode)
        self.encoder.eval()  # always frozen
        if self.strategy == "adapter":
            self.llm.eval()
        return self

    @property
    def n_soft(self) -> int:
        return self.adapter.cfg.n_soft

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def soft_tokens(self, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder batch (with "mask"; moved to the adapter's device) -> (B, n_soft, llm_dim), LLM dtype."""
        device = next(self.adapter.parameters()).device
        seq = {k: v.to(device) if torch.is_tensor(v) else v for k, v in seq.items()}
        with torch.no_grad():
            states = self.encoder(seq)
        soft = self.adapter(states.to(next(self.adapter.parameters()).dtype), seq["mask"])
        return soft.to(self.llm.get_input_embeddings().weight.dtype)

    def forward(self, batch: dict[str, Any], terms: bool = False):
        """batch: {"seq": encoder batch, "chats": list[EncodedChat]} -> scalar loss (fp32), or with `terms`
        (sum of the token losses, number of labelled tokens) unchecked: a data-parallel rank must first
        learn whether ANY rank diverged, and divide by the labelled tokens of the whole global batch."""
        soft = self.soft_tokens(batch["seq"])
        if terms:
            return lm_loss_terms(self.llm, batch["chats"], soft, self.pad_id)
        return lm_loss(self.llm, batch["chats"], soft, self.pad_id)


def lm_loss(
    llm: nn.Module, chats: Sequence[EncodedChat], soft: torch.Tensor | None, pad_id: int
) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions, right padding; raises DivergedError."""
    total, n = lm_loss_terms(llm, chats, soft, pad_id)
    loss = total / n
    if not bool(torch.isfinite(loss)):
        raise DivergedError(f"non-finite training loss {loss.item()} (batch of {len(chats)} chats)")
    return loss


def lm_loss_terms(
    llm: nn.Module, chats: Sequence[EncodedChat], soft: torch.Tensor | None, pad_id: int
) -> tuple[torch.Tensor, int]:
    """(sum of the next-token cross-entropies over labelled positions (fp32), their number)."""
    inputs = build_inputs(chats, soft, llm.get_input_embeddings(), pad_id, padding_side="right")
    labels = inputs["labels"]
    # Column c's logits predict the label at c + 1. Only columns whose next label is set in some row
    # need logits: HF's `logits_to_keep` takes a 1-D index tensor (the same columns for every row), so
    # the head and the softmax run on those columns only - the answer and the delimiters, a few percent
    # of a long Text-k prompt - with the same loss as all logits (the release's CrossEntropyLoss mean).
    keep = (labels[:, 1:] != IGNORE).any(0).nonzero().flatten()
    if keep.numel() == 0:
        raise ValueError("no labelled token in the batch (empty answers?)")
    logits = llm(**llm_kwargs(inputs), logits_to_keep=keep).logits.float()
    targets = labels[:, keep + 1]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                            reduction="sum")
    return total, int((targets != IGNORE).sum())
