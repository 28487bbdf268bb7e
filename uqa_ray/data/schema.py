"""The official UQABench Arrow schema (UQABENCH.md section 2).

One row = one user, clicks oldest first. Ten `list<list<int>>` columns: outer list = time, inner
list = the bag of ids for that click. `align_*` files add `text`, a JSON chat.
Id 0 is padding in every vocabulary (the encoders' embedding bags use padding_idx=0).
"""
from __future__ import annotations

import json

import pyarrow as pa

from uqa_ray.io import InputError

# Side-information columns: one id per click.
ID_COLUMNS = (
    "uni_seq_item_id",
    "uni_seq_cate_id",
    "uni_seq_brand_id",
    "uni_seq_shop_id",
    "uni_seq_seller_id",
)
# Text columns: LLM-tokenizer ids of each name; one embedding table shared by all five.
BPE_COLUMNS = (
    "uni_seq_title_bpe_token_ids",
    "uni_seq_cate_bpe_token_ids",
    "uni_seq_shop_bpe_token_ids",
    "uni_seq_brand_bpe_token_ids",
    "uni_seq_seller_bpe_token_ids",
)
SEQ_COLUMNS = ID_COLUMNS + BPE_COLUMNS
TEXT_COLUMN = "text"

# The catalog field each column is made from (raw log contract, DESIGN.md section 2).
ID_SOURCE = {
    "uni_seq_item_id": "item_id",
    "uni_seq_cate_id": "cate_id",
    "uni_seq_brand_id": "brand_id",
    "uni_seq_shop_id": "shop_id",
    "uni_seq_seller_id": "seller_id",
}
BPE_SOURCE = {
    "uni_seq_title_bpe_token_ids": "title",
    "uni_seq_cate_bpe_token_ids": "cate_name",
    "uni_seq_shop_bpe_token_ids": "shop_name",
    "uni_seq_brand_bpe_token_ids": "brand_name",
    "uni_seq_seller_bpe_token_ids": "seller_name",
}
BPE_VOCAB_KEY = "bpe"  # meta.json "vocab" key of the shared BPE table

SEQ_TYPE = pa.list_(pa.list_(pa.int64()))
PRETRAIN_SCHEMA = pa.schema([pa.field(c, SEQ_TYPE) for c in SEQ_COLUMNS])
ALIGN_SCHEMA = pa.schema(list(PRETRAIN_SCHEMA) + [pa.field(TEXT_COLUMN, pa.string())])

PRETRAIN_FILES = {"train": "pretrain_data_train.arrow", "eval": "pretrain_data_eval.arrow"}
ALIGN_FILES = {"train": "align_data_train.arrow", "eval": "align_data_eval.arrow"}

# Raw log contract.
CLICK_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("ts", pa.int64())])
CATALOG_SCHEMA = pa.schema(
    [(c, pa.int64()) for c in ("item_id", "cate_id", "brand_id", "shop_id", "seller_id")]
    + [(c, pa.string()) for c in ("title", "cate_name", "brand_name", "shop_name", "seller_name")]
)


def check_schema(schema: pa.Schema, expected: pa.Schema, where: str) -> None:
    """Raise InputError naming `where` and the first missing or mistyped column."""
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise InputError(f"{where}: missing column {field.name!r} (have {schema.names})")
        got = schema.field(idx).type
        if not _compatible(got, field.type):
            raise InputError(f"{where}: column {field.name!r} has type {got}, expected {field.type}")


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got)
    if pa.types.is_list(want) or pa.types.is_large_list(want):
        return (pa.types.is_list(got) or pa.types.is_large_list(got)) and _compatible(
            got.value_type, want.value_type
        )
    return got == want


# --- The prepared data folder (written by `uqa-ray prepare`, read by every later stage) -----------
# <data>/pretrain_data_{train,eval}.arrow   PRETRAIN_SCHEMA, one row per user, clicks oldest first
# <data>/users_{train,eval}.parquet         row (int64, row in the .arrow file), user (dense anonymized
#                                           id), raw_user_id, length, ts (list<int64>, one per click)
# <data>/maps/items.parquet                 item (dense id >= 1), raw_item_id, cate, brand, shop, seller
#                                           (dense ids), title
# <data>/maps/{cate,brand,shop,seller}.parquet   id (dense >= 1), raw_id, name
# <data>/tokenizer/                         HF tokenizer folder (load with data.tokenizer.load_tokenizer)
# <data>/truth.parquet                      planted truth (synthetic logs only), dense ids, see synthetic.py
# <data>/meta.json                          vocab sizes per column (+ "bpe"), counts, filters, seed, ...
# <data>/align_data_{train,eval}.arrow      ALIGN_SCHEMA (written by `uqa-ray questions`)
# <data>/questions_{train,eval}.parquet     one row per align row: sub-task, options, gold (questions/)
USERS_FILES = {"train": "users_train.parquet", "eval": "users_eval.parquet"}
MAPS_DIR = "maps"
ATTRIBUTES = ("cate", "brand", "shop", "seller")
TOKENIZER_DIR = "tokenizer"
TRUTH_FILE = "truth.parquet"
META_FILE = "meta.json"
QUESTIONS_FILES = {"train": "questions_train.parquet", "eval": "questions_eval.parquet"}


def parse_chat(text: str, where: str = "text") -> list[dict[str, str]]:
    """The `text` column's JSON chat -> list of {"role", "content"}; a clear error names `where`."""
    try:
        chat = json.loads(text)
    except (TypeError, ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the parser's stack
        raise InputError(f"{where}: not a JSON chat: {e}") from e
    if not isinstance(chat, list) or not chat:
        raise InputError(f"{where}: a chat must be a non-empty JSON list of messages, got {text[:80]!r}")
    for i, m in enumerate(chat):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise InputError(f"{where}: message {i} must have string 'role' and 'content', got {m!r}")
        if m["role"] not in ("system", "user", "assistant"):
            raise InputError(f"{where}: message {i} has unknown role {m['role']!r}")
    return chat


def chat_turns(text: str, where: str = "text") -> tuple[str, str]:
    """(question, answer): the first user and assistant turns of an official `text` cell."""
    chat = parse_chat(text, where)
    q = next((m["content"] for m in chat if m["role"] == "user"), None)
    a = next((m["content"] for m in chat if m["role"] == "assistant"), None)
    if q is None or a is None:
        raise InputError(f"{where}: the chat needs a user and an assistant turn, got {text[:80]!r}")
    return q, a
