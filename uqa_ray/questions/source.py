"""Reading a prepared data folder for question generation (layout: bottom of data/schema.py).

Only the item-id column of the sequence files is read for all users (record batch by record batch,
memory-mapped; ~4 bytes per click kept), since every other attribute of a click is its item's catalog
entry. That is checked on the first record batch against the file's own cate/brand/shop columns, so a
folder whose maps disagree with its sequences is an error, not silently wrong ground truth.

Values are keyed by NAME: two brand ids with the same name are one value, because the LLM only ever sees
the name; so counts, ties and distractors are all about the texts a question shows. Key 0 = unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from uqa_ray.data.official import read_batch
from uqa_ray.data.schema import MAPS_DIR, PRETRAIN_FILES, PRETRAIN_SCHEMA, SEQ_COLUMNS, USERS_FILES, check_schema
from uqa_ray.io import InputError, reason

ATTRS = ("title", "cate", "brand", "shop")
ITEM_COL = "uni_seq_item_id"
ID_COL = {"cate": "uni_seq_cate_id", "brand": "uni_seq_brand_id", "shop": "uni_seq_shop_id"}


@dataclass
class Attr:
    name: str
    key_of_item: np.ndarray  # int32 [n_items + 1]: item -> value key (0 = unknown)
    text: list[str]  # key -> name ("" for key 0)
    popular: np.ndarray  # keys, most clicked (in the train split) first, key 0 excluded


@dataclass
class Catalog:
    attrs: dict[str, Attr]
    id_of_item: dict[str, np.ndarray]  # raw dense cate/brand/shop ids per item (for the consistency check)
    items_by_cate: tuple[np.ndarray, np.ndarray]  # (items sorted by cate key, start of each cate key)
    item_clicks: np.ndarray  # clicks per item in the train split

    @property
    def n_items(self) -> int:
        return len(self.attrs["title"].key_of_item) - 1


@dataclass
class Sequences:
    split: str
    path: Path
    offsets: np.ndarray  # int64 [n_users + 1], row r's clicks are items[offsets[r]:offsets[r+1]]
    items: np.ndarray  # int32 item ids, oldest first
    users: np.ndarray  # int64 user id of each row
    batch_rows: np.ndarray  # int64 [n_batches + 1], first row of each record batch

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def clicks(self, row: int) -> np.ndarray:
        return self.items[self.offsets[row] : self.offsets[row + 1]]


def read_parquet(path: Path, columns: list[str], ints: tuple[str, ...] = (), texts: tuple[str, ...] = ()) -> pa.Table:
    """The columns of a parquet file; those in `ints` must be integers without nulls, those in `texts`
    strings (nulls allowed: an unknown name). Anything else is an InputError naming file and column."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        have = pq.read_schema(path).names
        for c in columns:
            if c not in have:
                raise InputError(f"{path}: missing column {c!r} (have {have})")
        t = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as e:  # truncated, not parquet, or a page that does not decode
        raise InputError(f"{path}: unreadable parquet file ({reason(e)})") from e
    for c in ints:
        if not pa.types.is_integer(t[c].type):
            raise InputError(f"{path}: column {c!r} has type {t[c].type}, expected int64")
        if t[c].null_count:
            raise InputError(f"{path}: column {c!r} has null values")
    for c in texts:
        if not (pa.types.is_string(t[c].type) or pa.types.is_large_string(t[c].type)):
            raise InputError(f"{path}: column {c!r} has type {t[c].type}, expected string")
    return t


def _dense(ids: np.ndarray, what: str) -> np.ndarray:
    """Row index by dense id: position i holds the row of id i. Dense ids are exactly 1..n (as prepare
    writes them), which also bounds the index: one huge id must not allocate an array of its size."""
    if len(ids) and (ids.min() < 1 or ids.max() > len(ids) or np.bincount(ids).max() > 1):
        raise InputError(f"{what} must hold the dense ids 1..{len(ids)}, each once")
    pos = np.full(int(ids.max(initial=0)) + 1, -1, np.int64)
    pos[ids] = np.arange(len(ids))
    return pos


def _name_keys(names: pa.Array, pos: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Keys of names[pos[i]] for every id i: each distinct non-empty name gets one key (1, 2, ...);
    a missing row, a null or an empty name is key 0. Arrow's dictionary encoding does it in C++."""
    placed = names.take(pa.array(pos, mask=pos < 0))
    enc = pa.chunked_array([placed]).combine_chunks().dictionary_encode()
    keys = (enc.indices.fill_null(-1).to_numpy(zero_copy_only=False) + 1).astype(np.int32)
    empty = pc.index(enc.dictionary, "").as_py()
    if empty >= 0:
        keys[keys == empty + 1] = 0
    return keys, [""] + enc.dictionary.to_pylist()


def load_catalog(data: Path) -> Catalog:
    items_path = data / MAPS_DIR / "items.parquet"
    items = read_parquet(items_path, ["item", "cate", "brand", "shop", "title"], ints=("item", "cate", "brand", "shop"),
                         texts=("title",))
    item = items["item"].to_numpy().astype(np.int64)
    pos = _dense(item, f"{items_path}: column 'item'")
    n = len(pos) - 1
    keys, text = _name_keys(items["title"].combine_chunks(), pos)
    attrs = {"title": Attr("title", keys, text, np.zeros(0, np.int64))}
    ids = {}
    for a in ("cate", "brand", "shop"):
        map_path = data / MAPS_DIR / f"{a}.parquet"
        m = read_parquet(map_path, ["id", "name"], ints=("id",), texts=("name",))
        mpos = _dense(m["id"].to_numpy().astype(np.int64), f"{map_path}: column 'id'")
        item_ids = np.zeros(n + 1, np.int64)
        item_ids[item] = items[a].to_numpy().astype(np.int64)
        known = np.zeros(n + 1, bool)
        inside = (item_ids >= 0) & (item_ids < len(mpos))
        known[inside] = mpos[item_ids[inside]] >= 0
        bad = (item_ids != 0) & ~known
        if bad.any():
            raise InputError(f"{items_path}: column {a!r} holds id {int(item_ids[bad][0])} that "
                             f"{map_path} does not define")
        id_key, text = _name_keys(m["name"].combine_chunks(), mpos)
        id_key[0] = 0
        attrs[a] = Attr(a, id_key[item_ids], text, np.zeros(0, np.int64))
        ids[a] = item_ids
    ck = attrs["cate"].key_of_item
    order = np.argsort(ck, kind="stable").astype(np.int64)
    starts = np.searchsorted(ck[order], np.arange(len(attrs["cate"].text) + 1))
    return Catalog(attrs, ids, (order, starts), np.zeros(n + 1, np.int64))


def open_arrow(path: Path) -> ipc.RecordBatchFileReader:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        return ipc.open_file(pa.memory_map(str(path), "r"))
    except (OSError, pa.ArrowInvalid) as e:
        raise InputError(f"{path}: not a readable Arrow IPC file ({reason(e)})") from e


def _check_ids(batch: pa.RecordBatch, path: Path) -> None:
    """No null sequence, bag or id, no negative id, in any of the ten columns: they are copied into the
    align files as they are, and the encoders read 0 as padding and index embeddings by id."""
    for c in SEQ_COLUMNS:
        col = batch.column(c)
        ids = col.flatten().flatten()
        if col.null_count or col.flatten().null_count or ids.null_count:
            raise InputError(f"{path}: column {c!r} has a null sequence, click bag or id")
        low = pc.min(ids).as_py() if len(ids) else 0
        if low < 0:
            raise InputError(f"{path}: column {c!r} has a negative id ({low})")


def _flat_ids(col: pa.ListArray, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-row click counts, one id per click) of a list<list<int>> column whose bags hold one id."""
    if col.null_count:
        raise InputError(f"{path}: column {name!r} has a null sequence")
    lens = col.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    inner = col.flatten()
    bags = inner.value_lengths().to_numpy(zero_copy_only=False)
    if inner.null_count or (len(bags) and (bags.min() != 1 or bags.max() != 1)):
        raise InputError(f"{path}: column {name!r} must hold exactly one id per click")
    return lens, inner.flatten().to_numpy(zero_copy_only=False)


def load_sequences(data: Path, split: str, catalog: Catalog) -> Sequences:
    path = data / PRETRAIN_FILES[split]
    reader = open_arrow(path)
    check_schema(reader.schema, PRETRAIN_SCHEMA, str(path))
    lens_parts, item_parts, batch_rows = [], [], [0]
    for b in range(reader.num_record_batches):
        batch = read_batch(reader, b, path)
        _check_ids(batch, path)
        lens, items = _flat_ids(batch.column(ITEM_COL), path, ITEM_COL)
        if len(lens) and lens.min() == 0:
            row = batch_rows[-1] + int(np.argmin(lens))
            raise InputError(f"{path}: row {row} has an empty sequence in {ITEM_COL!r}")
        if len(items) and (items.min() < 1 or items.max() > catalog.n_items):
            v = int(items[(items < 1) | (items > catalog.n_items)][0])
            raise InputError(f"{path}: column {ITEM_COL!r} holds item id {v}, outside the catalog "
                             f"(1..{catalog.n_items}, maps/items.parquet)")
        for c in SEQ_COLUMNS:  # every column must have one bag per click (offsets only: cheap)
            other = batch.column(c).value_lengths().to_numpy(zero_copy_only=False)
            if not np.array_equal(other, lens):
                row = batch_rows[-1] + int(np.flatnonzero(other != lens)[0])
                raise InputError(f"{path}: row {row}: column {c!r} has a different number of clicks "
                                 f"than {ITEM_COL!r}")
        if b == 0:  # the catalog must agree with the file's own side-information columns
            for a, c in ID_COL.items():
                _, got = _flat_ids(batch.column(c), path, c)
                want = catalog.id_of_item[a][items]
                if not np.array_equal(got, want):
                    i = int(np.flatnonzero(got != want)[0])
                    raise InputError(f"{path}: column {c!r} disagrees with maps/items.parquet "
                                     f"(click {i} of the first batch: {int(got[i])} vs {int(want[i])})")
        lens_parts.append(lens)
        item_parts.append(items.astype(np.int32))
        batch_rows.append(batch_rows[-1] + batch.num_rows)
    if batch_rows[-1] == 0:
        raise InputError(f"{path}: the file holds no users")
    lens = np.concatenate(lens_parts)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    users_path = data / USERS_FILES[split]
    u = read_parquet(users_path, ["row", "user"], ints=("row", "user"))
    rows = u["row"].to_numpy()
    if not np.array_equal(np.sort(rows), np.arange(len(lens))):
        raise InputError(f"{users_path}: column 'row' must list rows 0..{len(lens) - 1} of {path.name}")
    users = np.empty(len(lens), np.int64)
    users[rows] = u["user"].to_numpy().astype(np.int64)
    return Sequences(split, path, offsets, np.concatenate(item_parts), users, np.asarray(batch_rows, np.int64))


def add_popularity(catalog: Catalog, train: Sequences, pool: int) -> None:
    """Click counts of the train split rank items and attribute values for distractors."""
    clicks = np.bincount(train.items, minlength=catalog.n_items + 1).astype(np.int64)
    clicks[0] = 0
    catalog.item_clicks = clicks
    for attr in catalog.attrs.values():
        per_key = np.bincount(attr.key_of_item, weights=clicks, minlength=len(attr.text))
        per_key[0] = -1
        order = np.argsort(-per_key, kind="stable")
        attr.popular = order[per_key[order] > 0][:pool].astype(np.int64)
