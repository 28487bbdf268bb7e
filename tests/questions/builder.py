"""Build a small prepared data folder (schema.py layout) from hand-written sequences, for tests.

Twelve items in five categories with Chinese names; brands 2 and 7 share the name 小米 on purpose
(questions key values by name). The tokenizer is a byte-level BPE trained on the names.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from uqa_ray.data.schema import PRETRAIN_FILES, PRETRAIN_SCHEMA, USERS_FILES

CATES = {1: "连衣裙", 2: "手机", 3: "口红", 4: "零食", 5: "耳机"}
BRANDS = {1: "花语", 2: "小米", 3: "兰蔻", 4: "良品铺子", 5: "华为", 6: "森马", 7: "小米"}
SHOPS = {1: "花语旗舰店", 2: "小米官方店", 3: "兰蔻专柜", 4: "良品铺子店", 5: "华为商城", 6: "森马服饰店"}
SELLERS = {i: f"卖家{i}" for i in range(1, 7)}
# item: (title, cate, brand, shop); seller = shop
ITEMS = {
    1: ("碎花连衣裙", 1, 1, 1), 2: ("雪纺连衣裙", 1, 6, 6), 3: ("红米手机", 2, 2, 2),
    4: ("华为手机", 2, 5, 5), 5: ("哑光口红", 3, 3, 3), 6: ("滋润口红", 3, 3, 3),
    7: ("坚果礼盒", 4, 4, 4), 8: ("牛肉干", 4, 4, 4), 9: ("蓝牙耳机", 5, 5, 5),
    10: ("降噪耳机", 5, 7, 2), 11: ("牛仔连衣裙", 1, 1, 1), 12: ("辣条", 4, 4, 4),
}
ATTR_INDEX = {"title": 0, "cate": 1, "brand": 2, "shop": 3}
NAMES = {"cate": CATES, "brand": BRANDS, "shop": SHOPS}

EVAL_SEQS = [
    [1, 2, 1, 11, 1, 7, 2, 1, 11, 5, 3, 4, 3, 3, 9, 3, 4, 3, 10, 3, 3, 4, 9, 3, 3],
    [5, 6, 5, 5, 7, 5, 6, 8, 5, 6, 7, 7, 8, 12, 7, 5, 8, 7, 12, 7, 9, 10, 9, 9, 9],
    [3, 3, 4, 3, 9, 10, 3, 4, 3, 3, 1, 1, 2, 11, 1, 1, 3, 1, 2, 1, 7, 8, 7, 12, 7, 7],
    [9, 9, 10, 9, 9, 1, 9, 10, 9, 5, 9, 10, 4, 9, 9, 3, 9, 10, 9, 9],
    [7, 8, 12, 7, 8, 7, 12, 8, 7, 7, 5, 6, 5, 5, 6, 5, 7, 5, 6, 5, 1, 2, 11, 1, 1, 2, 1],
    [1, 3, 5, 7, 9, 2, 4, 6, 8, 10, 11, 12, 1, 3, 5, 7],
    [2, 2, 11, 2, 1, 2, 11, 2, 2, 1, 6, 5, 6, 6, 5, 6, 6, 3, 6, 6, 8, 8, 7, 8, 8, 12, 8],
    [10, 9, 10, 10, 9, 10, 4, 10, 10, 9, 3, 4, 3, 4, 3, 3, 4, 3, 4, 3, 5, 6, 5, 5, 5, 6, 5],
    [4, 4, 4, 3, 4, 4, 4, 3, 4, 4, 4, 4, 3, 4, 9, 4, 4, 4],
    [12, 7, 12, 8, 12, 12, 7, 12, 12, 8, 11, 1, 11, 11, 2, 11, 1, 11, 11, 1],
]
TRAIN_SEQS = [s[5:] + s[:5] for s in EVAL_SEQS] + [list(reversed(s)) for s in EVAL_SEQS]


def train_tokenizer(folder: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer

    words = [t for t, *_ in ITEMS.values()] + [n for d in (CATES, BRANDS, SHOPS, SELLERS) for n in d.values()]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(words * 3 + ["A B C D 用户 浏览 商品"], vocab_size=400, min_frequency=1,
                            show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))


def _columns(seqs: list[list[int]], encode) -> dict[str, list]:
    cols = {f.name: [] for f in PRETRAIN_SCHEMA}
    for seq in seqs:
        rows = {c: [] for c in cols}
        for i in seq:
            title, cate, brand, shop = ITEMS[i]
            ids = {"item": i, "cate": cate, "brand": brand, "shop": shop, "seller": shop}
            for k, v in ids.items():
                rows[f"uni_seq_{k}_id"].append([v])
            texts = {"title": title, "cate": CATES[cate], "shop": SHOPS[shop], "brand": BRANDS[brand],
                     "seller": SELLERS[shop]}
            for k, t in texts.items():
                rows[f"uni_seq_{k}_bpe_token_ids"].append(encode(t))
        for c in cols:
            cols[c].append(rows[c])
    return cols


def write_arrow(path: Path, cols: dict[str, list], batch_rows: int = 3, schema: pa.Schema = PRETRAIN_SCHEMA) -> None:
    table = pa.table(cols, schema=schema)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as w:
        for b in table.to_batches(max_chunksize=batch_rows):
            w.write_batch(b)


def build_prepared(root: Path, train=TRAIN_SEQS, eval_=EVAL_SEQS) -> Path:
    from tokenizers import Tokenizer

    root.mkdir(parents=True, exist_ok=True)
    train_tokenizer(root / "tokenizer")
    tok = Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json"))
    encode = lambda t: tok.encode(t).ids
    for split, seqs in (("train", train), ("eval", eval_)):
        write_arrow(root / PRETRAIN_FILES[split], _columns(seqs, encode))
        base = 1000 if split == "train" else 2000
        pq.write_table(pa.table({
            "row": list(range(len(seqs))), "user": [base + r for r in range(len(seqs))],
            "raw_user_id": [90000 + base + r for r in range(len(seqs))], "length": [len(s) for s in seqs],
            "ts": [[1_600_000_000 + 60 * j for j in range(len(s))] for s in seqs],
        }), root / USERS_FILES[split])
    maps = root / "maps"
    maps.mkdir(exist_ok=True)
    pq.write_table(pa.table({
        "item": list(ITEMS), "raw_item_id": [500 + i for i in ITEMS],
        "cate": [v[1] for v in ITEMS.values()], "brand": [v[2] for v in ITEMS.values()],
        "shop": [v[3] for v in ITEMS.values()], "seller": [v[3] for v in ITEMS.values()],
        "title": [v[0] for v in ITEMS.values()],
    }), maps / "items.parquet")
    for name, d in (("cate", CATES), ("brand", BRANDS), ("shop", SHOPS), ("seller", SELLERS)):
        pq.write_table(pa.table({"id": list(d), "raw_id": [700 + i for i in d], "name": list(d.values())}),
                       maps / f"{name}.parquet")
    (root / "meta.json").write_text(json.dumps({"vocab": {"uni_seq_item_id": len(ITEMS) + 1}}))
    return root


def text_of(item: int, attr: str) -> str:
    """The name a question shows for `attr` of `item` (independent of the generator's code)."""
    v = ITEMS[item][ATTR_INDEX[attr]]
    return v if attr == "title" else NAMES[attr][v]
