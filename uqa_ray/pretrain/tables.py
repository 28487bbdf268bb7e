"""Row-sparse embedding tables (`OptimConfig.tables = "sparse"`): their optimizer reads and writes only
the rows a step touched.

At the official vocabulary the tables hold ~181M parameters (item ids 127M, side columns and BPE 54M) of
which one micro-batch reads a few thousand rows; a dense AdamW still reads and writes every row's weight,
gradient and two moments each step. Here the lookups give sparse (COO) gradients
(`PretrainObjective.sparse_tables`) and `RowSparseAdam` updates those rows only, with torch's `SparseAdam`
(lazy Adam: a row's moments advance when the row is read, as TensorFlow's LazyAdam and fbgemm's row-wise
optimizers do). While every row is read at every step it equals dense AdamW; a row never read is never
changed (dense AdamW without weight decay leaves it alone too). The backbone stays with the DeepSpeed
engine. docs/decisions.md has why this path and its limits.

The item table joins only when the loss reads a subset of its rows (sampled softmax, InfoNCE): the full
CE's tied head reads all of them, so its gradient is dense anyway.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn


def split_parameters(objective: nn.Module, tables: str) -> tuple[list[nn.Parameter], dict[str, nn.Parameter]]:
    """A PretrainObjective's parameters under `optim.tables` = `tables`: (those the engine's dense optimizer
    owns, the row-sparse tables by name for `RowSparseAdam`). "sparse" switches the lookups first
    (`PretrainObjective.sparse_tables`); "dense" leaves every parameter in the first."""
    sparse = {id(p) for p in (objective.sparse_tables() if tables == "sparse" else [])}
    return ([p for p in objective.parameters() if id(p) not in sparse],
            {n: p for n, p in objective.named_parameters() if id(p) in sparse})


class RowSparseAdam:
    """`torch.optim.SparseAdam` over sparse-gradient tables, with an fp32 master copy of any table held in
    a lower precision (DeepSpeed's bf16 engine casts the whole module; the moments and the weight are then
    kept in fp32 here, as the engine keeps its own optimizer's, and the touched rows copied back).

    `reduce` (optional) turns each table's local gradient into the data-parallel mean in place before the
    update (the engine's own sparse all-reduce; ranks hold the same tables, so they stay equal)."""

    def __init__(self, params: dict[str, nn.Parameter], lr: float, betas: tuple[float, float], eps: float,
                 reduce: Callable[[list[nn.Parameter]], None] | None = None) -> None:
        self.names, self.params = list(params), list(params.values())
        self.masters = [p if p.dtype == torch.float32 else nn.Parameter(p.detach().float()) for p in self.params]
        # One group per table: each gets the eps its own step count asks for (`step`).
        self.opt = torch.optim.SparseAdam([{"params": [m]} for m in self.masters], lr=lr, betas=betas, eps=eps)
        self.eps, self.beta2, self.reduce = eps, betas[1], reduce

    def step(self, lr: float | None = None) -> None:
        """One update from the tables' accumulated gradients (`lr`: this step's, from the engine's schedule),
        then the gradients are cleared. A table no row of which was read this step is skipped."""
        if self.reduce is not None:
            # Every rank reduces every table, so the collectives match even where a table went unread on one
            # rank (an empty gradient); a table no rank read is then skipped, as in one process.
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.sparse_coo_tensor(torch.empty((1, 0), dtype=torch.long, device=p.device),
                                                     p.new_empty((0, *p.shape[1:])), p.shape)
            self.reduce(self.params)
            for p in self.params:
                if p.grad._nnz() == 0:
                    p.grad = None
        for p, m in zip(self.params, self.masters):
            if p.grad is None:
                continue
            if not p.grad.is_sparse:
                raise RuntimeError(f"row-sparse table of shape {tuple(p.shape)} got a dense gradient: something "
                                   "read the table outside its lookup")
            if m is not p:
                m.grad = p.grad.float()
        for group, m in zip(self.opt.param_groups, self.masters):
            if lr is not None:
                group["lr"] = lr
            # SparseAdam adds eps to sqrt(v) before the bias correction, AdamW after it; eps x sqrt(1 - b2^t)
            # here is AdamW's eps at step t, so a row read at every step moves exactly as under AdamW.
            t = self.opt.state[m].get("step", 0) + 1
            group["eps"] = self.eps * math.sqrt(1.0 - self.beta2**t)
        self.opt.step()
        with torch.no_grad():
            for p, m in zip(self.params, self.masters):
                if m is not p and m.grad is not None:
                    rows = m.grad.coalesce().indices()[0]
                    p.index_copy_(0, rows, m.index_select(0, rows).to(p.dtype))
        self.zero_grad()

    def zero_grad(self) -> None:
        for p, m in zip(self.params, self.masters):
            p.grad = None
            m.grad = None

    def state_dict(self) -> dict[str, Any]:
        """The moments, step counts and the fp32 masters of low-precision tables by parameter name (what a
        resumed run needs; an export takes such a table's master over its rounded weight)."""
        return {"optimizer": self.opt.state_dict(),
                "masters": {n: m.detach() for n, p, m in zip(self.names, self.params, self.masters) if m is not p}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        with torch.no_grad():
            for n, p, m in zip(self.names, self.params, self.masters):
                if m is not p:
                    m.copy_(state["masters"][n])
