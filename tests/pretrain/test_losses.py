"""Fused and chunked full-vocabulary CE == naive CE (value and gradients); sampled softmax; InfoNCE;
objective."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS
from uqa_ray.config import build
from uqa_ray.encoders import preset_config
from uqa_ray.pretrain.losses import (
    IGNORE, LIBRARY_CE, LossConfig, chunked_cross_entropy, full_cross_entropy, fused_cross_entropy, fused_rows,
    info_nce, naive_cross_entropy, sampled_softmax,
)
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.pretrain.metrics import ranks_from_scores, target_ranks
from uqa_ray.pretrain.objective import PretrainObjective


def data(n=13, v=50, d=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(v, d, generator=g, dtype=dtype)
    t = torch.randint(0, v, (n,), generator=g)
    t[::4] = IGNORE  # padded targets
    return h, w, t


# The two exact ways, by their chunk: items per chunk for `chunked`; for `fused` rows per chunk (its
# max_logits is chunk x the 50 items): one row / 7 rows / all 13 rows / more than all.
CE_IMPLS = {"chunked": lambda h, w, t, chunk: chunked_cross_entropy(h, w, t, chunk),
            "fused": lambda h, w, t, chunk: fused_cross_entropy(h, w, t, chunk * w.shape[0])}


@pytest.mark.parametrize("impl", sorted(CE_IMPLS))
@pytest.mark.parametrize("chunk", [1, 7, 50, 64])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_exact_ce_equals_naive_value_and_grads(impl, chunk, dtype, tol):
    h, w, t = data(dtype=dtype)
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    a = CE_IMPLS[impl](h1, w1, t, chunk)
    b = F.cross_entropy(h2 @ w2.T, t, ignore_index=IGNORE)
    (a * 3.0).backward()  # a non-unit upstream gradient
    (b * 3.0).backward()
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    torch.testing.assert_close(h1.grad, h2.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(w1.grad, w2.grad, atol=tol, rtol=tol)
    assert h1.grad[t == IGNORE].abs().sum() == 0


def test_chunked_gradcheck_and_edge_cases():
    h, w, t = data(n=5, v=9, d=3, dtype=torch.float64)
    h.requires_grad_(), w.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: chunked_cross_entropy(a, b, t, 4), (h, w))
    none = torch.full_like(t, IGNORE)
    loss = chunked_cross_entropy(h, w, none, 4)
    loss.backward()
    assert loss.item() == 0 and h.grad.abs().sum() == 0
    # large logits: the running log-sum-exp must not overflow
    big = chunked_cross_entropy(h.detach() * 1e3, w.detach(), t, 4)
    torch.testing.assert_close(big, naive_cross_entropy(h.detach() * 1e3, w.detach(), t))
    with pytest.raises(ValueError, match="number of items"):
        chunked_cross_entropy(h, w, torch.full_like(t, 9), 4)


def test_fused_row_chunks_round_to_64_and_stay_exact():
    rows = [fused_rows(r * 50, 50) for r in (1, 63, 64, 100, 127, 128, 270, 1079)]
    assert rows == [1, 63, 64, 64, 64, 128, 256, 1024]
    assert fused_rows(10, 50) == 1  # fewer logits than one row's: still one row
    # 150 rows at 100 rows' worth of logits -> chunks of 64, 64 and 22
    h, w, t = data(n=150, v=50, d=8)
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    a = fused_cross_entropy(h1, w1, t, 100 * 50)
    b = F.cross_entropy(h2 @ w2.T, t, ignore_index=IGNORE)
    a.backward(), b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)


def test_fused_edge_cases():
    h, w, t = data(n=5, v=9, d=3, dtype=torch.float64)
    # only the inputs that need a gradient get one (a frozen table, a query without grad)
    hq, ref_h = h.clone().requires_grad_(), h.clone().requires_grad_()
    fused_cross_entropy(hq, w, t, 20).backward()
    naive_cross_entropy(ref_h, w, t).backward()
    torch.testing.assert_close(hq.grad, ref_h.grad)
    wq = w.clone().requires_grad_()
    ref_w = w.clone().requires_grad_()
    fused_cross_entropy(h.detach(), wq, t, 20).backward()
    naive_cross_entropy(h.detach(), ref_w, t).backward()
    torch.testing.assert_close(wq.grad, ref_w.grad)
    # no grad mode (evaluation): the loss alone
    with torch.no_grad():
        loss = fused_cross_entropy(hq, wq, t, 20)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, naive_cross_entropy(h.detach(), w, t))
    none = torch.full_like(t, IGNORE)
    h0 = h.detach().clone().requires_grad_()
    loss = fused_cross_entropy(h0, w, none, 20)
    loss.backward()
    assert loss.item() == 0 and h0.grad.abs().sum() == 0
    big = fused_cross_entropy(h.detach() * 1e3, w, t, 20)  # the log-sum-exp must not overflow
    torch.testing.assert_close(big, naive_cross_entropy(h.detach() * 1e3, w, t))
    with pytest.raises(ValueError, match="number of items"):
        fused_cross_entropy(h, w, torch.full_like(t, 9), 20)
    # its gradients are handed on once: a second backward through the graph is refused by name
    again = fused_cross_entropy(h.detach().clone().requires_grad_(), w, t, 20)
    again.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph is not supported"):
        again.backward()


def test_fused_bf16_inputs_accumulate_in_fp32():
    h, w, t = data(n=40, v=300, d=16)
    hb, wb = h.bfloat16().requires_grad_(), w.bfloat16().requires_grad_()
    loss = fused_cross_entropy(hb, wb, t, 64 * 300)
    loss.backward()
    assert loss.dtype == torch.float32 and hb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16
    cb, cw = hb.detach().clone().requires_grad_(), wb.detach().clone().requires_grad_()
    naive = naive_cross_entropy(cb, cw, t)
    naive.backward()  # the same bf16 logits and fp32 softmax; its gradient matmuls run in bf16
    torch.testing.assert_close(loss, naive, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(hb.grad.float(), cb.grad.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(wb.grad.float(), cw.grad.float(), atol=1e-2, rtol=1e-2)


def test_sampled_softmax_matches_its_definition():
    h, w, t = data()
    lq = torch.log_softmax(torch.randn(50, generator=torch.Generator().manual_seed(3)), 0)
    for log_q in (None, lq):
        loss = sampled_softmax(h, w, t, 6, torch.Generator().manual_seed(7), log_q)
        g = torch.Generator().manual_seed(7)
        neg = torch.randint(0, 50, (6,), generator=g) if log_q is None else torch.multinomial(
            lq.exp(), 6, replacement=True, generator=g)
        total = 0.0
        valid = (t >= 0).nonzero()[:, 0]
        for i in valid.tolist():
            corr = torch.zeros(50) if log_q is None else log_q
            logits = [h[i] @ w[t[i]] - corr[t[i]]] + [h[i] @ w[j] - corr[j] for j in neg.tolist() if j != t[i]]
            total += -(logits[0] - torch.logsumexp(torch.stack(logits), 0))
        torch.testing.assert_close(loss, total / len(valid))


def test_mixed_negatives_are_uniform_draws_plus_the_batch_targets_with_their_expected_counts():
    h, w, t = data()
    log_p = torch.log_softmax(torch.randn(50, generator=torch.Generator().manual_seed(3)), 0)
    loss = sampled_softmax(h, w, t, 6, torch.Generator().manual_seed(7), None, log_p)
    valid = (t >= 0).nonzero()[:, 0]
    neg = torch.randint(0, 50, (6,), generator=torch.Generator().manual_seed(7)).tolist() + t[valid].tolist()
    # log expected count among the negatives: 6 uniform draws (6/50) + every valid row's target drawn by p
    corr = torch.log(6 / 50 + len(valid) * log_p.exp())
    total = 0.0
    for i in valid.tolist():  # a negative equal to the row's own target (its own in-batch copy too) is masked
        logits = [h[i] @ w[t[i]] - corr[t[i]]] + [h[i] @ w[j] - corr[j] for j in neg if j != t[i]]
        total += -(logits[0] - torch.logsumexp(torch.stack(logits), 0))
    torch.testing.assert_close(loss, total / len(valid))


def test_mixed_sampler_needs_the_training_popularity():
    enc = preset_config("tiny", VOCAB, d_model=16, n_heads=2, dropout=0.0)
    with pytest.raises(ValueError, match="mixed sampling needs item_counts"):
        PretrainObjective(enc, LossConfig(kind="sampled", sampler="mixed"))


def test_sampled_softmax_with_logq_estimates_the_full_gradient():
    # With the logQ correction, popularity-sampled softmax is a consistent estimate of the full softmax
    # gradient; without it, the estimate is biased towards popular items.
    h, w, t = data(n=4, v=40, d=6)
    t = torch.tensor([3, 17, 25, 39])
    log_q = torch.log_softmax(torch.linspace(4, 0, 40), 0)  # strongly skewed popularity

    def grad(fn):
        x = h.clone().requires_grad_()
        fn(x).backward()
        return x.grad

    full = grad(lambda x: naive_cross_entropy(x, w, t))
    corrected = grad(lambda x: sampled_softmax(x, w, t, 100_000, torch.Generator().manual_seed(0), log_q))
    biased = grad(lambda x: F.cross_entropy(torch.cat([(x * w[t]).sum(-1, keepdim=True), x @ w[
        torch.multinomial(log_q.exp(), 100_000, True, generator=torch.Generator().manual_seed(0))].T], 1),
        torch.zeros(4, dtype=torch.long)))
    err = (corrected - full).norm() / full.norm()
    assert err < 0.03, err
    assert (biased - full).norm() / full.norm() > 5 * err


def test_info_nce_by_hand():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [5.0, 5.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    t = torch.tensor([0, 1, 0, IGNORE])
    loss = info_nce(h, w, t, temperature=0.5, normalize=False)
    e = w[[0, 1, 0]]
    s = h[:3] @ e.T / 0.5
    # rows 0 and 2 share item 0: neither is the other's negative
    rows = [s[0, 0] - torch.logsumexp(s[0, [0, 1]], 0), s[1, 1] - torch.logsumexp(s[1], 0),
            s[2, 2] - torch.logsumexp(s[2, [1, 2]], 0)]
    torch.testing.assert_close(loss, -torch.stack(rows).mean())
    cos = info_nce(h, w, t, temperature=1.0, normalize=True)
    assert math.isfinite(cos.item())


VOCAB = {c: 30 for c in ID_COLUMNS} | {"bpe": 20}


def batch():
    g = torch.Generator().manual_seed(0)
    b = {c: torch.randint(1, 30, (2, 6), generator=g) for c in ID_COLUMNS}
    b |= {c: torch.randint(0, 20, (2, 6, 2), generator=g) for c in BPE_COLUMNS}
    b["mask"] = torch.tensor([[1] * 6, [1] * 3 + [0] * 3], dtype=torch.bool)
    for c in ID_COLUMNS:
        b[c] = b[c] * b["mask"]
    return b


@pytest.mark.parametrize("kind,ce,sampler", [("ce", "fused", "uniform"), ("ce", "chunked", "uniform"),
                                             ("sampled", "fused", "popularity"), ("sampled", "fused", "mixed"),
                                             ("infonce", "fused", "uniform")])
def test_objective_predicts_the_next_item_with_the_tied_table(kind, ce, sampler):
    torch.manual_seed(0)
    enc = preset_config("tiny", VOCAB, d_model=16, n_heads=2, dropout=0.0)
    counts = torch.arange(30)
    obj = PretrainObjective(enc, LossConfig(kind=kind, ce=ce, chunk_size=7, max_logits=40, n_negatives=8,
                                            sampler=sampler), counts)
    b = batch()
    out = obj(b)
    assert int(out["n"]) == 5 + 2  # positions with a next click
    out["loss"].backward()
    assert obj.encoder.item_input.item_embedding.weight.grad.abs().sum() > 0
    if kind == "ce":  # the reference: naive CE over items 1..29 from the same states
        q = obj.head(obj.encoder(b))
        items = b["uni_seq_item_id"]
        sel = b["mask"][:, 1:]
        ref = F.cross_entropy(q[:, :-1][sel] @ obj.item_table().T, items[:, 1:][sel] - 1)
        torch.testing.assert_close(out["loss"], ref)
    scores = obj.score_last(b)
    assert scores.shape == (2, 30) and torch.isinf(scores[:, 0]).all()
    q, target = obj.last_queries(b)
    assert target.tolist() == [int(b["uni_seq_item_id"][0, 5]), int(b["uni_seq_item_id"][1, 2])]
    torch.testing.assert_close(scores[:, 1:], q @ obj.item_table().T)


def test_cosine_similarity_is_what_training_the_eval_loss_and_the_ranking_use():
    torch.manual_seed(0)
    enc = preset_config("tiny", VOCAB, d_model=16, n_heads=2, dropout=0.0, similarity="cosine", temperature=0.5)
    obj = PretrainObjective(enc, LossConfig(max_logits=40)).eval()
    b = batch()
    sel, items = b["mask"][:, 1:], b["uni_seq_item_id"]
    q = F.normalize(obj.head(obj.encoder(b)), dim=-1) / 0.5
    table = obj.encoder.item_input.item_embedding.weight
    ref = F.cross_entropy(q[:, :-1][sel] @ F.normalize(table[1:], dim=-1).T, items[:, 1:][sel] - 1)
    torch.testing.assert_close(obj(b)["loss"], ref)
    queries, last, target, _ = obj.eval_queries(b)
    loss_sum, n = obj.eval_loss(queries, b, table)
    torch.testing.assert_close(loss_sum / n, ref)
    cos = F.normalize(last, dim=-1) @ F.normalize(table, dim=-1).T  # the ranking is by cosine
    cos[:, 0] = float("-inf")
    assert torch.equal(target_ranks(last, obj.item_vectors(table), target), ranks_from_scores(cos, target))
    torch.testing.assert_close(obj.score_last(b).softmax(-1), (cos / 0.5).softmax(-1))
    # The sampled and in-batch losses normalise only the rows they read: the same as from a normalised table.
    for loss in (LossConfig(kind="sampled", n_negatives=8), LossConfig(kind="infonce", normalize=False)):
        obj.loss_cfg = loss
        obj.sample_step.zero_()
        got = obj(b)["loss"]
        rows, tgt = obj._rows(obj.queries(obj.encoder(b)), b)
        table = F.normalize(obj.item_table(), dim=-1)
        want = (sampled_softmax(rows, table, tgt, 8, torch.Generator().manual_seed(0)) if loss.kind == "sampled"
                else info_nce(rows, table, tgt, loss.temperature, False))
        torch.testing.assert_close(got, want)


def test_chunked_bf16_inputs_accumulate_in_fp32():
    h, w, t = data(n=40, v=300, d=16)
    hb, wb = h.bfloat16().requires_grad_(), w.bfloat16().requires_grad_()
    loss = chunked_cross_entropy(hb, wb, t, 64)
    loss.backward()
    assert loss.dtype == torch.float32 and hb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16
    h32, w32 = hb.detach().float().requires_grad_(), wb.detach().float().requires_grad_()
    ref = naive_cross_entropy(h32, w32, t)
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(hb.grad.float(), h32.grad, atol=2e-3, rtol=5e-2)


@pytest.mark.parametrize("name", sorted(LIBRARY_CE))
def test_library_ce_is_cuda_only_and_evaluation_keeps_the_exact_loss(name):
    """A library kernel (loss.ce liger / cce) refuses CPU tensors with an error naming the way out; the
    evaluation loss of a run trained with one is the lab's exact CE; a config asking for one without a GPU
    fails when it is read."""
    h, w, t = data()
    cfg = LossConfig(ce=name)
    with pytest.raises(RuntimeError, match=f"loss.ce={name} runs on CUDA only.*loss.ce=fused"):
        full_cross_entropy(h, w, t, cfg)
    torch.testing.assert_close(full_cross_entropy(h, w, t, cfg, exact=True), naive_cross_entropy(h, w, t))
    with pytest.raises(ValueError, match="needs scaling.use_gpu true"):
        build(PretrainConfig, {}, {"loss": {"ce": name}})
    assert build(PretrainConfig, {}, {"loss": {"ce": name}, "scaling": {"use_gpu": True}}).loss.ce == name
    with pytest.raises(ValueError, match="ce must be one of"):
        LossConfig(ce="triton")
