"""`PretrainObjective`: encoder + next-item head + loss, one module for the trainer to wrap.

Next-item prediction at every valid position (UQABENCH.md section 3): the state at click t, projected
by a linear d_model -> item_dim (128, official; `layers.io_linear`), is scored against the item-id
embedding table of the encoder's own input (tied output). Row 0 (padding) is not an item: by default it
is left out of every softmax (target id k is row k-1 of `item_table()`); with `release=True` the softmax
runs over every row, row 0 included, as the release's does. Because every encoder is causal, one pass
over the full sequence serves all positions (`data.collate.next_item_targets`).

ZeRO-3 note: `item_table()` reads the item embedding's weight outside that embedding's own forward.
Under ZeRO-3 register it once with `deepspeed.zero.register_external_parameter(objective, p)` for each
`p` in `objective.external_parameters()`, so DeepSpeed gathers it for the head.

Scores are dot products, or with `EncoderConfig.cosine` (HSTU's learning default) cosine similarities
over a temperature: `queries` and `item_vectors` map both sides into the space where the dot product is
the logit, and training, the eval loss and the ranking all go through them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uqa_ray.data.collate import eval_targets, last_item_targets, next_item_targets
from uqa_ray.encoders.base import build_encoder
from uqa_ray.encoders.config import EncoderConfig
from uqa_ray.encoders.layers import io_linear
from uqa_ray.pretrain.losses import IGNORE, LossConfig, full_cross_entropy, info_nce, sampled_softmax


class PretrainObjective(nn.Module):
    def __init__(
        self, enc_cfg: EncoderConfig, loss_cfg: LossConfig | None = None, item_counts: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.enc_cfg, self.loss_cfg = enc_cfg, loss_cfg or LossConfig()
        self.encoder = build_encoder(enc_cfg)
        self.head = io_linear(enc_cfg, enc_cfg.d_model, enc_cfg.item_dim, identity_cols=enc_cfg.d_model)
        self.first_row = 0 if enc_cfg.release else 1  # the softmax's first row of the item table
        n_items = enc_cfg.vocab["uni_seq_item_id"] - 1
        # Sampling step, saved in checkpoints, so a resumed run draws the same negatives.
        self.register_buffer("sample_step", torch.zeros((), dtype=torch.long))
        log_pop = None  # log training popularity of each softmax row: the popularity and in-batch proposals
        if self.loss_cfg.kind == "sampled" and self.loss_cfg.sampler != "uniform":
            if item_counts is None or item_counts.shape[0] != n_items + 1:
                raise ValueError(f"{self.loss_cfg.sampler} sampling needs item_counts of length {n_items + 1} "
                                 f"(ids 0..{n_items})")
            q = item_counts[self.first_row:].double() + 1.0  # add-one: every row stays drawable
            log_pop = (q / q.sum()).log().float()
        self.register_buffer("log_pop", log_pop, persistent=False)
        self.sparse_items = False  # item rows gathered with sparse gradients (`sparse_tables`)

    def sparse_tables(self) -> list[nn.Parameter]:
        """Switch the embedding lookups to sparse (row) gradients; returns the tables' parameters, which a
        row-sparse optimizer (tables.RowSparseAdam) must own and no dense one. The item table joins only when
        the loss reads a subset of its rows: the full CE's tied head reads every row (a dense gradient)."""
        item_input = self.encoder.item_input
        modules = [m for m in item_input.tables.values() if m is not item_input.item_embedding]
        if item_input.bpe is not None:
            modules.append(item_input.bpe)
        if self.loss_cfg.kind != "ce":
            modules.append(item_input.item_embedding)
            self.sparse_items = True
        for m in modules:
            m.sparse = True
        return [m.weight for m in modules]

    def _gather(self, ids: torch.Tensor) -> torch.Tensor:
        """Softmax rows `ids` of the item table, read with a sparse gradient (F.embedding on the whole
        weight: indexing a slice would give a dense one)."""
        return F.embedding(ids + self.first_row, self.encoder.item_input.item_embedding.weight, sparse=True)

    def external_parameters(self) -> list[nn.Parameter]:
        return [self.encoder.item_input.item_embedding.weight]

    def item_table(self) -> torch.Tensor:
        """The softmax's rows: item ids 1.. (row k-1 is id k), or with `release` every row (row k is id k)."""
        return self.encoder.item_input.item_embedding.weight[self.first_row:]

    def queries(self, h: torch.Tensor) -> torch.Tensor:
        """Backbone states (..., d_model) -> query vectors (..., item_dim) whose dot product with
        `item_vectors` rows is the logit."""
        q = self.head(h)
        return F.normalize(q, dim=-1) / self.enc_cfg.temperature if self.enc_cfg.cosine else q

    def item_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """Item-table rows (V, item_dim) as the queries score them (L2-normalised under cosine)."""
        return F.normalize(rows, dim=-1) if self.enc_cfg.cosine else rows

    def _rows(self, q: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B*T, item_dim) and softmax-row targets (B*T,), IGNORE where there is no next click."""
        tgt = next_item_targets(batch)
        tgt = torch.where(tgt > 0, tgt - self.first_row, torch.full_like(tgt, IGNORE)).reshape(-1)
        return q.reshape(-1, q.shape[-1]), tgt

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"loss": mean loss over predicted positions (0-dim), "n": their number (0-dim long tensor)}."""
        q, tgt = self._rows(self.queries(self.encoder(batch)), batch)
        w, cfg = self.item_table(), self.loss_cfg
        gather = self._gather if self.sparse_items else None  # None: the losses index `w`
        if cfg.kind == "ce":  # reads every row
            loss = full_cross_entropy(q, self.item_vectors(w), tgt, cfg)
        elif cfg.kind == "sampled":  # this and InfoNCE map only the rows they read (`rows`)
            step = int(self.sample_step)
            if self.training:
                self.sample_step += 1
            gen = torch.Generator(device=q.device).manual_seed(cfg.seed * 1_000_003 + step)
            mixed = cfg.sampler == "mixed"  # uniform draws + in-batch targets (drawn by popularity)
            loss = sampled_softmax(q, w, tgt, cfg.n_negatives, gen, None if mixed else self.log_pop,
                                   self.log_pop if mixed else None, rows=self.item_vectors, gather=gather)
        else:
            loss = info_nce(q, w, tgt, cfg.temperature, cfg.normalize, rows=self.item_vectors, gather=gather)
        return {"loss": loss, "n": (tgt >= 0).sum()}

    def last_queries(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(query (B, item_dim) at each row's second-to-last click, target item id (B,), 0 = none)."""
        pos, target = last_item_targets(batch)
        h = self.encoder(batch)
        h = h[torch.arange(h.shape[0], device=h.device), pos]
        return self.queries(h), target

    @torch.no_grad()
    def eval_queries(self, batch: dict[str, torch.Tensor], last: int = 1
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One encoder pass for evaluation: (queries (B, T, item_dim) at every position, and for each of
        the last `last` clicks of every row (`data.collate.eval_targets`, flat B * last): the query that
        scores it, its target id (0 = none) and its row)."""
        q = self.queries(self.encoder(batch))
        row, pos, target = eval_targets(batch, last)
        return q, q[row, pos], target, row

    @torch.no_grad()
    def eval_loss(self, q: torch.Tensor, batch: dict[str, torch.Tensor], item_table: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed full-softmax next-item loss over every predicted position, their number) from
        `eval_queries`'s queries and the whole item-id table (under ZeRO-3: gathered by the caller). The
        full cross-entropy whatever the training loss, so every run reports on one scale."""
        rows, tgt = self._rows(q, batch)
        n = (tgt >= 0).sum()
        if not n:
            return q.new_zeros((), dtype=torch.float32), n
        w = self.item_vectors(item_table[self.first_row:].float())
        return full_cross_entropy(rows.float(), w, tgt, self.loss_cfg, exact=True) * n, n

    @torch.no_grad()
    def score_last(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, V) scores of every item id 0..V-1 (V = the item vocabulary; column 0, padding, is -inf)
        for each row's next click after its second-to-last one; the targets are
        `data.collate.last_item_targets(batch)[1]`. For a full vocabulary and many rows prefer
        `last_queries` + `metrics.target_ranks`, which never materializes B x V."""
        q, _ = self.last_queries(batch)
        s = q.float() @ self.item_vectors(self.encoder.item_input.item_embedding.weight.float()).T
        s[:, 0] = float("-inf")
        return s
