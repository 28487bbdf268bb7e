"""Next-item losses over a large item vocabulary (UQABENCH.md section 3: full-vocabulary CE; table 3: CL).

The official objective is a softmax over every item; at 994k items one micro-batch of 4x512 positions
makes ~2e9 logits (8 GB fp32), and autograd would keep them plus their gradient. Two exact ways without
that memory:
- `fused_cross_entropy` (the default): rows in chunks of about `max_logits // V`; each chunk's logits over
  every item give its loss AND its gradients in the same pass (softmax minus one-hot, as Liger's fused
  linear cross-entropy does), so the backward only scales them: three matmul passes, as autograd's, and
  O(rows * V + V * D) memory.
- `chunked_cross_entropy`: items in chunks, a running log-sum-exp in the forward and each chunk's logits
  recomputed in the backward (as Cut Cross-Entropy): O(N * chunk) memory, four matmul passes.
docs/decisions.md and BENCHMARKS.md ("Full-vocabulary CE") have both against the naive loss.

On CUDA, `ce` "liger" / "cce" hand the same loss to a library fused linear CE (Liger-Kernel, Cut
Cross-Entropy; Triton kernels, optional packages): `LIBRARY_CE`. BENCHMARKS.md has how they compare.
`sampled_softmax` (uniform, popularity or mixed in-batch + uniform negatives, logQ-corrected) and `info_nce` (in-batch
negatives, temperature; the paper's contrastive "CL" rows) are the cheaper alternatives.
All take query vectors h (N, D), the item table W (V, D) and targets (N,) as indices into W, with
`ignore_index` marking positions without a target.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from uqa_ray import vocab

IGNORE = -100
# loss.ce -> the pip package of a library fused linear CE (CUDA only; not a dependency of the lab)
LIBRARY_CE = {"liger": "liger-kernel", "cce": "cut-cross-entropy"}
CE_KINDS = ("fused", "chunked", *LIBRARY_CE)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    kind: Literal["ce", "sampled", "infonce"] = "ce"
    ce: Literal["fused", "chunked", "liger", "cce"] = "fused"  # how the full-vocabulary CE is computed (module doc)
    max_logits: int = 1 << 26  # fused CE: logits held at once (its row chunk is max_logits // items rows)
    chunk_size: int = 32768  # chunked CE: items per chunk
    n_negatives: int = 1024  # sampled softmax: negatives shared by the micro-batch
    # sampled softmax's negatives: uniform draws, draws by training popularity, or "mixed": uniform draws
    # plus the micro-batch's own targets (in-batch), both logQ-corrected (`sampled_softmax`)
    sampler: Literal["uniform", "popularity", "mixed"] = "uniform"
    temperature: float = 0.1  # InfoNCE
    normalize: bool = True  # InfoNCE on cosine similarities
    seed: int = 0  # negative sampling generator

    def __post_init__(self) -> None:
        if self.kind not in vocab.LOSS_KINDS:
            raise ValueError(f"kind must be one of {tuple(vocab.LOSS_KINDS)}, got {self.kind!r}")
        if self.sampler not in ("uniform", "popularity", "mixed"):
            raise ValueError(f"sampler must be uniform, popularity or mixed, got {self.sampler!r}")
        if self.ce not in CE_KINDS:
            raise ValueError(f"ce must be one of {CE_KINDS}, got {self.ce!r}")
        if self.chunk_size < 1 or self.n_negatives < 1 or self.max_logits < 1:
            raise ValueError("chunk_size, max_logits and n_negatives must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class _ChunkedCE(torch.autograd.Function):
    """Mean over valid rows of logsumexp_v(h.W_v) - h.W_target, in item chunks.

    Autocast is switched off inside: the logits are computed in the inputs' own common dtype (bf16 under
    DeepSpeed bf16, fp32 otherwise) in BOTH passes, so the backward recomputes exactly the forward's
    logits; log-sum-exp, softmax and gradients accumulate in fp32 (fp64 for fp64 inputs).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk: int) -> torch.Tensor:
        mm = torch.promote_types(h.dtype, w.dtype)
        acc = torch.promote_types(mm, torch.float32)
        valid = target >= 0
        hv, tv = h[valid].to(mm), target[valid]
        n = hv.shape[0]
        lse = torch.full((n,), float("-inf"), device=h.device, dtype=acc)
        with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
            for s in range(0, w.shape[0], chunk):
                logits = (hv @ w[s : s + chunk].to(mm).T).to(acc)
                lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=-1))
            tgt = (hv.to(acc) * w[tv].to(acc)).sum(-1)
        ctx.save_for_backward(h, w, target, lse)
        ctx.chunk = chunk
        return (lse - tgt).sum() / max(n, 1)  # fp32 (or fp64) even for bf16 inputs

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        h, w, target, lse = ctx.saved_tensors
        mm, acc = torch.promote_types(h.dtype, w.dtype), lse.dtype
        valid = target >= 0
        hv, tv = h[valid].to(mm), target[valid]
        hacc = hv.to(acc)
        scale = grad.to(acc) / max(hv.shape[0], 1)
        gh = torch.zeros(hv.shape, device=h.device, dtype=acc)
        gw = torch.zeros(w.shape, device=w.device, dtype=acc) if ctx.needs_input_grad[1] else None
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, w.shape[0], ctx.chunk):
                wc = w[s : s + ctx.chunk].to(mm)
                # the softmax chunk, recomputed from the forward's logits, times dL
                p = torch.exp((hv @ wc.T).to(acc) - lse[:, None]) * scale
                gh += p @ wc.to(acc)
                if gw is not None:
                    gw[s : s + ctx.chunk] += p.T @ hacc
            # the -h.W_target term
            gh -= w[tv].to(acc) * scale
            if gw is not None:
                gw.index_add_(0, tv, hacc * -scale)
        gh_full = torch.zeros_like(h)
        gh_full[valid] = gh.to(h.dtype)
        return gh_full, (gw.to(w.dtype) if gw is not None else None), None, None


def fused_rows(max_logits: int, items: int) -> int:
    """Rows per chunk of the fused CE: `max_logits // items`, from 64 up rounded down to a multiple of 64,
    the row counts its CPU matmuls run fastest at (BENCHMARKS.md, "Full-vocabulary CE")."""
    rows = max(1, max_logits // items)
    return rows - rows % 64 if rows >= 64 else rows


class _FusedCE(torch.autograd.Function):
    """Mean over valid rows of logsumexp_v(h.W_v) - h.W_target, with its gradients made in the forward.

    Per row chunk (`fused_rows`): logits in the inputs' common dtype (as `_ChunkedCE`), then in fp32 (fp64
    for fp64 inputs) the log-sum-exp, the loss and p = softmax - one_hot(target), scaled by 1 / rows;
    dh = p W and dW += p^T h. The backward multiplies the stored gradients by the upstream gradient, in place.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, max_logits: int,
                need_h: bool, need_w: bool) -> torch.Tensor:
        mm = torch.promote_types(h.dtype, w.dtype)
        acc = torch.promote_types(mm, torch.float32)
        valid = target >= 0
        hv, tv = h[valid].to(mm), target[valid]
        n = hv.shape[0]
        rows = fused_rows(max_logits, w.shape[0])
        inv = 1.0 / max(n, 1)
        wm = w.to(mm)
        wa = w.to(acc) if need_h else None  # w itself unless w is bf16
        gh = torch.empty(hv.shape, device=h.device, dtype=acc) if need_h else None
        gw = torch.zeros(w.shape, device=w.device, dtype=acc) if need_w else None
        total = torch.zeros((), device=h.device, dtype=acc)
        # One logits buffer for every chunk, worked in place (max, exp, sum, softmax): a fresh V-wide
        # tensor per step costs its allocation, and log-sum-exp's own temporary would double it. Item-major
        # (V, rows): its three matmuls run faster on CPU than on the row-major layout (BENCHMARKS.md).
        buf = torch.empty(min(rows, n) * w.shape[0], device=h.device, dtype=acc)
        with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
            for s in range(0, n, rows):
                hc, tc = hv[s : s + rows], tv[s : s + rows]
                at = torch.arange(hc.shape[0], device=h.device)
                logits = buf[: w.shape[0] * hc.shape[0]].view(w.shape[0], hc.shape[0])  # column j: row s + j
                if mm == acc:
                    torch.mm(wm, hc.T, out=logits)
                else:
                    logits.copy_(wm @ hc.T)
                picked = logits[tc, at]
                top = logits.amax(dim=0)
                sums = logits.sub_(top).exp_().sum(dim=0)
                total += (top + sums.log() - picked).sum()
                if gh is None and gw is None:
                    continue
                p = logits.mul_(inv / sums)  # softmax / valid rows
                p[tc, at] -= inv
                if gh is not None:
                    torch.mm(p.T, wa, out=gh[s : s + rows])
                if gw is not None:
                    gw.addmm_(p, hc.to(acc))
        # Held as attributes, not saved tensors: the backward hands them on (scaled in place), so autograd can
        # take dW as W's .grad without a copy of a V x D tensor.
        ctx.grads = (valid, gh, gw)
        ctx.meta = (h.shape, h.dtype, w.dtype)
        return total * inv

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        if ctx.grads is None:
            raise RuntimeError("fused_cross_entropy: its gradients were handed on by an earlier backward "
                               "(retain_graph is not supported)")
        (valid, gh, gw), (h_shape, h_dtype, w_dtype) = ctx.grads, ctx.meta
        ctx.grads = None
        gh_full = None
        if gh is not None:
            gh_full = torch.zeros(h_shape, device=gh.device, dtype=h_dtype)
            gh_full[valid] = gh.mul_(grad.to(gh.dtype)).to(h_dtype)
        if gw is not None:
            gw = gw.mul_(grad.to(gw.dtype)).to(w_dtype)
        return gh_full, gw, None, None, None, None


def fused_cross_entropy(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor,
                        max_logits: int = 1 << 26) -> torch.Tensor:
    """Mean full-softmax cross-entropy of h (N, D) against every row of w (V, D); rows whose target is
    negative (IGNORE) are left out. Equals `F.cross_entropy(h @ w.T, target, ignore_index=-100)`.
    Gradients are made in the forward only when grad mode is on and an input requires them."""
    if not bool((target < w.shape[0]).all()):
        raise ValueError(f"target index >= number of items {w.shape[0]}")
    grad = torch.is_grad_enabled()
    return _FusedCE.apply(h, w, target, max_logits, grad and h.requires_grad, grad and w.requires_grad)


def full_cross_entropy(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, cfg: LossConfig,
                       exact: bool = False) -> torch.Tensor:
    """The full-vocabulary CE the way `cfg.ce` says; `exact` keeps to the lab's own kernels (fp32-exact, any
    device: a library kernel's place is taken by the fused CE), as evaluation does."""
    if cfg.ce == "chunked":
        return chunked_cross_entropy(h, w, target, cfg.chunk_size)
    if cfg.ce == "fused" or exact:
        return fused_cross_entropy(h, w, target, cfg.max_logits)
    return library_cross_entropy(cfg.ce, h, w, target)


def library_cross_entropy(name: str, h: torch.Tensor, w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The same mean CE from a library fused linear CE (`LIBRARY_CE`) on CUDA. Cut Cross-Entropy runs exact
    (`filter_eps=None`): its default gradient filter drops softmax values under 2^-12, which at ~1M items
    is every item but the target while the model is young."""
    if h.device.type != "cuda":
        raise RuntimeError(f"loss.ce={name} runs on CUDA only (Triton kernels), got tensors on {h.device}; "
                           "use loss.ce=fused")
    if not bool((target < w.shape[0]).all()):  # a Triton kernel would read past the table
        raise ValueError(f"target index >= number of items {w.shape[0]}")
    # One dtype for both, as a matmul under autocast would have them (bf16 queries against an fp32 table)
    dtype = (torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda")
             else torch.promote_types(h.dtype, w.dtype))
    h, w = h.to(dtype), w.to(dtype)
    try:
        if name == "liger":
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            # dW summed over its row chunks in fp32, as the fused CE sums it (its default: the inputs' dtype)
            return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, accum_dtype=torch.float32)(w, h, target)
        from cut_cross_entropy import linear_cross_entropy

        return linear_cross_entropy(h, w, target, ignore_index=IGNORE, filter_eps=None)
    except ImportError as e:
        raise RuntimeError(f"loss.ce={name} needs the {LIBRARY_CE[name]} package (pip install "
                           f"{LIBRARY_CE[name]}): {e}") from e


def chunked_cross_entropy(
    h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk_size: int = 32768
) -> torch.Tensor:
    """Mean full-softmax cross-entropy of h (N, D) against every row of w (V, D); rows whose target is
    negative (IGNORE) are left out. Equals `F.cross_entropy(h @ w.T, target, ignore_index=-100)`."""
    if not bool((target < w.shape[0]).all()):
        raise ValueError(f"target index >= number of items {w.shape[0]}")
    return _ChunkedCE.apply(h, w, target, chunk_size)


def naive_cross_entropy(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference: materializes all N x V logits."""
    return F.cross_entropy((h @ w.T).to(torch.promote_types(h.dtype, torch.float32)), target, ignore_index=IGNORE)


def sampled_softmax(
    h: torch.Tensor,
    w: torch.Tensor,
    target: torch.Tensor,
    n_negatives: int,
    generator: torch.Generator,
    log_q: torch.Tensor | None = None,
    in_batch_log_q: torch.Tensor | None = None,
    rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Softmax over {target} + negatives shared by all rows: `n_negatives` items drawn (with replacement)
    from q (`log_q`; None = uniform) and, with `in_batch_log_q`, every row's target as well (mixed negative
    sampling, Yang et al. 2020: in-batch negatives follow the targets' own distribution, whose log
    probabilities `in_batch_log_q` gives; the uniform draws cover the tail in-batch never shows).

    logQ correction (Bengio & Senecal 2008; Yi et al. 2019): every logit has the log of its item's
    expected count among the negatives subtracted (n_negatives q(j), plus rows p(j) in-batch), so the
    estimate is consistent for the full softmax; with uniform draws alone it is a constant and is skipped.
    A negative equal to the row's target is masked out (an accidental hit is not a negative). `rows` maps
    the item rows the loss reads (cosine scoring normalises only those, not the whole table); `gather`
    reads rows of w by index (default `w[ids]`; a sparse-gradient lookup for row-sparse tables).
    """
    rows = rows or (lambda x: x)
    gather = gather or w.__getitem__
    valid = target >= 0
    hv, tv = h[valid], target[valid]
    if hv.shape[0] == 0:
        return h.sum() * 0.0
    v = w.shape[0]
    if log_q is None:
        neg = torch.randint(0, v, (n_negatives,), generator=generator, device=generator.device)
    else:
        neg = torch.multinomial(log_q.exp().to(generator.device), n_negatives, replacement=True, generator=generator)
    neg = neg.to(h.device)
    if in_batch_log_q is not None:
        neg = torch.cat([neg, tv])

    def log_count(ids: torch.Tensor) -> torch.Tensor:  # log expected count of each id among the negatives
        drawn = math.log(n_negatives) + (log_q[ids].float() if log_q is not None else -math.log(v))
        if in_batch_log_q is None:
            return drawn
        return torch.logaddexp(torch.as_tensor(drawn, device=ids.device).float(),
                               math.log(len(tv)) + in_batch_log_q[ids].float())

    pos_logit = (hv * rows(gather(tv))).sum(-1, keepdim=True).float()
    neg_logit = (hv @ rows(gather(neg)).T).float()
    if log_q is not None or in_batch_log_q is not None:
        pos_logit = pos_logit - log_count(tv)[:, None]
        neg_logit = neg_logit - log_count(neg)[None, :]
    neg_logit = neg_logit.masked_fill(neg[None, :] == tv[:, None], float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return F.cross_entropy(logits, torch.zeros(hv.shape[0], dtype=torch.long, device=h.device))


def info_nce(
    h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, temperature: float = 0.1, normalize: bool = True,
    rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """In-batch InfoNCE: row i's positive is its target item; the other rows' targets are its negatives
    (rows sharing the same target item are masked, not counted as negatives). `rows` and `gather` as in
    `sampled_softmax`."""
    valid = target >= 0
    hv, tv = h[valid], target[valid]
    if hv.shape[0] == 0:
        return h.sum() * 0.0
    e = (gather or w.__getitem__)(tv)
    e = rows(e) if rows else e
    if normalize:
        hv, e = F.normalize(hv.float(), dim=-1), F.normalize(e.float(), dim=-1)
    logits = (hv @ e.T).float() / temperature
    same = (tv[:, None] == tv[None, :]) & ~torch.eye(len(tv), dtype=torch.bool, device=h.device)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(tv), device=h.device))


def is_finite(loss: torch.Tensor) -> bool:
    """One host sync; the trainer decides what a non-finite loss means (skip, stop, record)."""
    return bool(torch.isfinite(loss).all())
