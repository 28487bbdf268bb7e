"""Row-sparse embedding tables (pretrain/tables.py, `PretrainObjective.sparse_tables`), plain torch."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS
from uqa_ray.encoders import preset_config
from uqa_ray.pretrain.losses import LossConfig
from uqa_ray.pretrain.objective import PretrainObjective
from uqa_ray.pretrain.tables import RowSparseAdam

VOCAB = {"uni_seq_item_id": 300, "uni_seq_cate_id": 20, "uni_seq_brand_id": 40, "uni_seq_shop_id": 50,
         "uni_seq_seller_id": 50, "bpe": 120}
HP = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}


def _lookup_steps(opt_step, weight: torch.nn.Parameter, rows: torch.Tensor, steps: int, sparse: bool) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        target = torch.randn(len(rows), weight.shape[1], generator=g)
        loss = (F.embedding(rows, weight, sparse=sparse) - target).pow(2).sum()
        loss.backward()
        opt_step()


@pytest.mark.parametrize("eps", [1e-8, 1.0])  # eps 1: where eps enters shows (SparseAdam's differs from AdamW's)
def test_row_sparse_adam_equals_dense_adamw_on_touched_rows_and_leaves_the_others(eps):
    hp = HP | {"eps": eps}
    init = torch.randn(50, 8)
    rows = torch.tensor([3, 7, 7, 20, 41])  # a repeated row: its two gradients add up, as in a batch
    dense = torch.nn.Parameter(init.clone())
    adamw = torch.optim.AdamW([dense], weight_decay=0.0, **hp)

    def dense_step():
        adamw.step()
        adamw.zero_grad()

    _lookup_steps(dense_step, dense, rows, 5, sparse=False)
    sparse = torch.nn.Parameter(init.clone())
    opt = RowSparseAdam({"w": sparse}, **hp)
    _lookup_steps(opt.step, sparse, rows, 5, sparse=True)
    touched = rows.unique()
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[touched] = False
    torch.testing.assert_close(sparse[touched], dense[touched], rtol=1e-6, atol=1e-7)
    assert not torch.equal(sparse[touched], init[touched])
    assert torch.equal(sparse.detach()[untouched], init[untouched])  # bit for bit
    assert sparse.grad is None  # step clears the gradients


def test_lazy_moments_a_row_read_once_then_left_keeps_its_value():
    # Dense Adam keeps moving a row on its momentum after the last read; lazy Adam does not (module doc).
    w = torch.nn.Parameter(torch.zeros(10, 4))
    opt = RowSparseAdam({"w": w}, **HP)
    _lookup_steps(opt.step, w, torch.tensor([1, 2]), 1, sparse=True)
    after_first = w.detach().clone()
    _lookup_steps(opt.step, w, torch.tensor([2]), 3, sparse=True)
    assert torch.equal(w.detach()[1], after_first[1]) and not torch.equal(w.detach()[2], after_first[2])


def test_bf16_tables_keep_fp32_masters_and_state_round_trips():
    init = torch.randn(30, 8)
    ref = torch.nn.Parameter(init.clone())
    ref_opt = RowSparseAdam({"w": ref}, **HP)
    low = torch.nn.Parameter(init.clone().bfloat16())
    opt = RowSparseAdam({"w": low}, **HP)
    rows = torch.tensor([0, 5, 9])
    _lookup_steps(ref_opt.step, ref, rows, 3, sparse=True)
    # the bf16 lookups give bf16 gradients; the update is made on the fp32 master
    _lookup_steps(opt.step, low, rows, 3, sparse=True)
    master = opt.state_dict()["masters"]["w"]
    assert master.dtype == torch.float32
    torch.testing.assert_close(master[rows], ref.detach()[rows], rtol=2e-2, atol=2e-3)
    assert torch.equal(low.detach()[rows], master[rows].bfloat16())
    # a fresh optimizer loaded from the state continues exactly as the original
    twin = torch.nn.Parameter(low.detach().clone())
    twin_opt = RowSparseAdam({"w": twin}, **HP)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint's save + load
    _lookup_steps(opt.step, low, rows, 2, sparse=True)
    _lookup_steps(twin_opt.step, twin, rows, 2, sparse=True)
    assert torch.equal(low.detach(), twin.detach())


def test_a_dense_gradient_on_a_sparse_table_is_an_error():
    w = torch.nn.Parameter(torch.zeros(10, 4))
    opt = RowSparseAdam({"w": w}, **HP)
    w[torch.tensor([1])].sum().backward()  # indexing, not a sparse lookup
    with pytest.raises(RuntimeError, match="dense gradient"):
        opt.step()


@pytest.mark.parametrize("kind,sampler", [("ce", "uniform"), ("sampled", "uniform"), ("sampled", "mixed"),
                                          ("infonce", "uniform")])
def test_sparse_lookups_give_the_same_loss_and_gradients(kind, sampler):
    cfg = preset_config("tiny", VOCAB, max_len=12)
    loss_cfg = LossConfig(kind=kind, sampler=sampler, n_negatives=32)
    counts = torch.arange(VOCAB["uni_seq_item_id"]).float()
    g = torch.Generator().manual_seed(0)
    batch = {c: torch.randint(1, VOCAB[c], (3, 12), generator=g) for c in ID_COLUMNS}
    batch |= {c: torch.randint(0, VOCAB["bpe"], (3, 12, 4), generator=g) for c in BPE_COLUMNS}
    batch["mask"] = torch.ones(3, 12, dtype=torch.bool)
    batch["mask"][2, 9:] = False
    grads = []
    for sparse in (False, True):
        torch.manual_seed(0)
        obj = PretrainObjective(cfg, loss_cfg, counts)
        tables = obj.sparse_tables() if sparse else []
        out = obj(batch)
        out["loss"].backward()
        grads.append((out["loss"].detach(), {n: p.grad for n, p in obj.named_parameters()}))
        if sparse:
            assert tables and all(p.grad.is_sparse for p in tables)
            item = obj.encoder.item_input.item_embedding.weight
            assert any(p is item for p in tables) == (kind != "ce")  # the full CE's tied head reads every row
    (dense_loss, dense_grads), (sparse_loss, sparse_grads) = grads
    assert torch.equal(dense_loss, sparse_loss)
    for name, gd in dense_grads.items():
        gs = sparse_grads[name]
        torch.testing.assert_close(gs.to_dense() if gs.is_sparse else gs, gd, rtol=1e-5, atol=1e-7, msg=name)


def test_with_a_reduce_every_table_is_reduced_and_an_unread_one_is_left_alone():
    # Ranks must enter the same collectives: a table this rank did not read is reduced too (with an empty
    # gradient), and when no rank read it (the reduce leaves it empty) it is not stepped.
    read, unread = torch.nn.Parameter(torch.randn(10, 4)), torch.nn.Parameter(torch.randn(6, 4))
    before = unread.detach().clone()
    seen = []

    def reduce(params):
        seen.append([tuple(p.shape) for p in params])
        assert all(p.grad is not None and p.grad.is_sparse for p in params)

    opt = RowSparseAdam({"read": read, "unread": unread}, reduce=reduce, **HP)
    _lookup_steps(opt.step, read, torch.tensor([1, 3]), 2, sparse=True)
    assert seen == [[(10, 4), (6, 4)]] * 2
    assert torch.equal(unread.detach(), before) and "step" not in opt.opt.state[unread]


@pytest.mark.parametrize("over,match", [
    ({"optim": {"tables": "rows"}}, "optim.tables"),
    ({"optim": {"tables": "sparse", "weight_decay": 0.1}}, "weight_decay 0 and grad_clip 0"),
    ({"optim": {"tables": "sparse", "grad_clip": 1.0}}, "weight_decay 0 and grad_clip 0"),
    ({"optim": {"tables": "sparse"}, "scaling": {"zero_stage": 3}}, "zero_stage 1 or 2"),
    ({"optim": {"tables": "sparse"}, "scaling": {"zero_stage": 0}}, "zero_stage 1 or 2"),
])
def test_sparse_tables_config_errors_name_the_setting(over, match):
    from uqa_ray.config import build
    from uqa_ray.pretrain.config import PretrainConfig

    with pytest.raises(ValueError, match=match):
        build(PretrainConfig, {"preset": "tiny"}, over)
