"""Catalog side of `prepare`: keep the surviving items, tokenize their titles once per item (Ray
Data) and the four attribute names once per distinct id, build the dense id maps (maps/) and the
per-item lookup table from which every click's ten columns are gathered (`sequences.py`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uqa_ray.data.schema import ATTRIBUTES, BPE_SOURCE, ID_SOURCE, MAPS_DIR
from uqa_ray.io import InputError, reason

NAME_COLUMNS = tuple(BPE_SOURCE.values())  # title, cate_name, shop_name, brand_name, seller_name
ATTR_COLUMN = {ID_SOURCE[c][: -len("_id")]: c for c in ID_SOURCE}  # "cate" -> "uni_seq_cate_id", ...
NAME_COLUMN = {src[: -len("_name")]: c for c, src in BPE_SOURCE.items() if src != "title"}  # "cate" -> BPE col
TITLE_COLUMN = next(c for c, src in BPE_SOURCE.items() if src == "title")
BAG_TYPE = pa.list_(pa.int64())


def catalog_keys(path: Path) -> np.ndarray:
    """Sorted raw item ids of the catalog, streamed by row group; nulls and duplicates are errors."""
    id_cols = list(ID_SOURCE.values())
    chunks = []
    try:
        for batch in pq.ParquetFile(path).iter_batches(columns=id_cols, batch_size=1 << 20):
            for c in id_cols:
                if batch.column(c).null_count:
                    raise InputError(f"{path}: column {c!r} has null values")
            chunks.append(batch.column("item_id").to_numpy())
    except (OSError, pa.ArrowException) as e:  # a page garbled behind a valid footer
        raise InputError(f"{path}: the catalog cannot be decoded ({reason(e)})") from e
    ids = np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)
    dup = ids[1:][ids[1:] == ids[:-1]]
    if len(dup):
        raise InputError(f"{path}: item_id {dup[0]} appears more than once in the catalog")
    if not len(ids):
        raise InputError(f"{path}: the catalog is empty")
    return ids


def _keep_block(batch: pa.Table, catalog_ref, dense_ref) -> pa.Table:
    import ray

    ids, dense = ray.get(catalog_ref), ray.get(dense_ref)
    d = dense[np.searchsorted(ids, batch["item_id"].to_numpy())]
    keep = d > 0
    return batch.filter(pa.array(keep)).append_column("item", pa.array(d[keep].astype(np.int64)))


def kept_items(catalog_ds, catalog_ref, dense_ref, n_items: int, rows_per_block: int = 50_000):
    """Catalog rows of the items that survived filtering, with their dense id `item`. Materialized
    (read twice: tokenizer corpus, tokenization) and cut into blocks of ~`rows_per_block` rows, so
    that tokenization runs in parallel even when the catalog is one big row group."""
    kept = catalog_ds.map_batches(_keep_block, batch_format="pyarrow",
                                  fn_kwargs={"catalog_ref": catalog_ref, "dense_ref": dense_ref}).materialize()
    return kept.repartition(max(1, -(-n_items // rows_per_block))).materialize()


def name_texts(kept_ds, n_items: int, max_items: int) -> Iterator[str]:
    """The corpus of the embedded tokenizer, streamed: the five names of every kept item, so that
    names are weighted by how many items carry them (a category name alone, as it is tokenized in
    its bag, must be frequent for BPE to merge it into one token). Above `max_items` items, every
    k-th dense item id is used: BPE statistics converge long before a million items, and training
    time grows with the corpus."""
    stride = max(1, -(-n_items // max_items))
    for batch in kept_ds.select_columns(["item", *NAME_COLUMNS]).iter_batches(batch_format="pyarrow",
                                                                               batch_size=8192):
        take = batch.filter(pa.array(batch["item"].to_numpy() % stride == 0))
        for c in NAME_COLUMNS:
            yield from (t for t in take[c].to_pylist() if t)


_TOKENIZERS: dict = {}


def encode(tok, texts: list, max_tokens: int) -> pa.Array:
    """Token bags of `texts`, cut to `max_tokens`; an empty or missing name becomes the padding bag
    [0] (the encoders' bags ignore padding_idx 0), so every click has a bag in every column."""
    enc = tok.encode_batch([t or "" for t in texts], add_special_tokens=False)
    return pa.array([e.ids[:max_tokens] or [0] for e in enc], BAG_TYPE)


def _tokenizer(tok_json: str):
    from tokenizers import Tokenizer

    if tok_json not in _TOKENIZERS:  # one deserialization per worker process
        _TOKENIZERS.clear()
        _TOKENIZERS[tok_json] = Tokenizer.from_str(tok_json)
    return _TOKENIZERS[tok_json]


def _tokenize_block(batch: pa.Table, tok_ref, max_tokens: int) -> pa.Table:
    import ray

    tok = _tokenizer(ray.get(tok_ref))
    return batch.append_column(TITLE_COLUMN, encode(tok, batch["title"].to_pylist(), max_tokens))


def tokenize(kept_ds, tok_ref, max_tokens: int):
    """Titles, once per item, in parallel; the four attribute names are tokenized once per distinct
    attribute id in `build_lookup` (a million items share 9.3k category names)."""
    return kept_ds.map_batches(_tokenize_block, batch_format="pyarrow",
                               fn_kwargs={"tok_ref": tok_ref, "max_tokens": max_tokens})


def build_lookup(out_dir: str, tok_json: str, max_tokens: int, *tables: pa.Table):
    """(lookup, info): lookup row i = dense item i (row 0 = padding) with the dense attribute ids and
    the five token bags; writes maps/. Dense attribute ids follow the sorted raw id (1..n, 0 =
    padding); an attribute's name is the one of its first item in dense item order."""
    t = pa.concat_tables(tables)
    t = t.take(pa.array(np.argsort(t["item"].to_numpy(), kind="stable")))
    n = t.num_rows
    if not np.array_equal(t["item"].to_numpy(), np.arange(1, n + 1)):
        raise RuntimeError("kept catalog rows are not exactly the dense items 1..n")
    maps = Path(out_dir) / MAPS_DIR
    maps.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(tok_json)
    pad = pa.array([[0]], BAG_TYPE)
    lookup, raw, dense = {TITLE_COLUMN: pa.concat_arrays([pad, *t[TITLE_COLUMN].chunks])}, {}, {}
    for a in ATTRIBUTES:
        uniq, first, inv = np.unique(t[f"{a}_id"].to_numpy(), return_index=True, return_inverse=True)
        dense[a] = (inv + 1).astype(np.int64)
        raw[a] = uniq
        names = t[f"{a}_name"].take(pa.array(first))
        pq.write_table(pa.table({"id": np.arange(1, len(uniq) + 1, dtype=np.int64), "raw_id": uniq,
                                 "name": names}), maps / f"{a}.parquet")
        lookup[ATTR_COLUMN[a]] = np.concatenate([[0], dense[a]])
        bags = pa.concat_arrays([pad, encode(tok, names.to_pylist(), max_tokens)])  # row k = attribute id k
        lookup[NAME_COLUMN[a]] = bags.take(pa.array(lookup[ATTR_COLUMN[a]]))
    pq.write_table(pa.table({"item": t["item"], "raw_item_id": t["item_id"], **dense, "title": t["title"]}),
                   maps / "items.parquet")
    info = {"n_items": n, "raw": raw, "vocab": {a: len(raw[a]) + 1 for a in ATTRIBUTES}}
    return pa.table(lookup), info
