"""Item input: one mean embedding bag per official column, concatenated and projected to d_model.

Official widths (UQABENCH.md section 3): item id 128, every other column 64, the five BPE columns share
ONE 64-wide table, so `full` is 128 + 4*64 + 5*64 = 704 wide. `no_text` drops the BPE columns (384),
`no_side` keeps only the item id (128), as in the paper's table 3.

ID columns arrive as (B, T) (one id per click: a bag of one), BPE columns as (B, T, K) right-padded with
0; padding_idx=0 keeps padding out of the mean. Ids are checked against the vocabulary with one max/min
reduction per column and a single host sync, so a bad id is a clear `InputError`, not a CUDA assert.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn

from uqa_ray.data.schema import BPE_COLUMNS, BPE_VOCAB_KEY, ID_COLUMNS
from uqa_ray.encoders.config import input_columns
from uqa_ray.encoders.layers import Embedding, EmbeddingBag, io_linear
from uqa_ray.io import InputError

if TYPE_CHECKING:
    from uqa_ray.encoders.config import EncoderConfig

ITEM = ID_COLUMNS[0]


class ItemInput(nn.Module):
    def __init__(self, cfg: "EncoderConfig") -> None:
        super().__init__()
        self.columns = input_columns(cfg.input_mode)
        self.id_columns = tuple(c for c in self.columns if c in ID_COLUMNS)
        self.bpe_columns = tuple(c for c in self.columns if c in BPE_COLUMNS)
        self.vocab = {c: int(cfg.vocab[c]) for c in self.id_columns}
        if self.bpe_columns:
            self.vocab.update({c: int(cfg.vocab[BPE_VOCAB_KEY]) for c in self.bpe_columns})
        std, release = cfg.init_std, cfg.release
        # The release's tables have no padding row (row 0 trains like any other); ours keep row 0 at zero.
        pad = None if release else 0
        # ModuleDict keys cannot contain '.', column names do not.
        self.tables = nn.ModuleDict(
            {c: Embedding(self.vocab[c], cfg.item_dim if c == ITEM else cfg.side_dim, padding_idx=pad, std=std,
                          truncated=release)
             for c in self.id_columns}
        )
        self.bpe = (EmbeddingBag(int(cfg.vocab[BPE_VOCAB_KEY]), cfg.side_dim, std=std, truncated=release)
                    if self.bpe_columns else None)
        self.in_dim = cfg.item_dim + cfg.side_dim * (len(self.columns) - 1)
        # The item-id block comes first in the concatenation: it is the projection's identity block.
        self.proj = io_linear(cfg, self.in_dim, cfg.d_model, identity_cols=cfg.item_dim, gain=math.sqrt(cfg.d_model))

    @property
    def item_embedding(self) -> nn.Embedding:
        """The item-id table; the pretraining head is tied to it."""
        return self.tables[ITEM]

    def check_ids(self, batch: Mapping[str, torch.Tensor]) -> None:
        missing = [c for c in self.columns if c not in batch]
        if missing:
            raise InputError(f"batch lacks column(s) {missing} needed by this encoder's input mode")
        stats = torch.stack([torch.stack([batch[c].max(), batch[c].min()]) for c in self.columns]).tolist()
        for c, (hi, lo) in zip(self.columns, stats):
            if hi >= self.vocab[c]:
                raise InputError(f"column {c!r}: out-of-vocabulary id {hi} (vocabulary size {self.vocab[c]})")
            if lo < 0:
                raise InputError(f"column {c!r}: negative id {lo}")

    def forward(self, batch: Mapping[str, torch.Tensor], check: bool = True) -> torch.Tensor:
        if check:
            self.check_ids(batch)
        parts = [self.tables[c](batch[c]) for c in self.id_columns]
        for c in self.bpe_columns:
            ids = batch[c]
            b, t, k = ids.shape
            parts.append(self.bpe(ids.reshape(b * t, k)).reshape(b, t, -1))
        return self.proj(torch.cat(parts, dim=-1))
