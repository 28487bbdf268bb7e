"""Where taught tiny LMs live: one cache per user, shared by every workdir, plus the copy the package ships.

Why: teaching the tiny default to read a history costs far longer on a CPU (instruct.py; docs/taught_lm.md)
than the rest of the README's main command. So a taught LM is keyed by what determines it, not by where
it was asked for:
- the tokenizer files and the catalog (every name the Text-k histories render; `maps/*.parquet`),
- the TRAIN users it was taught on (their raw ids: a data folder whose eval users were taught on gets
  another key, so no evaluated user is ever seen in teaching),
- the teaching config (`InstructConfig` without `threads`, which changes speed only),
- the code that builds, prompts and teaches it (`TEACHING_CODE`).
The questions themselves are not in the key: another question set over the same users reads the same
histories, and is what the LM is later evaluated on anyway.

Lookup (instruct.instruct_tiny_llm): the cache folder (`cache_dir()`, `$UQA_RAY_CACHE` or
`~/.cache/uqa-ray`), then the package's `taught/` folder (built by `experiments/teach_tiny_lm.py --ship`
for the embedded default's catalog, copied into the cache on first use), then teach. A taught folder
named explicitly as `grid.llm` for data of another catalog is refused (`check_taught_for`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from uqa_ray.config import source_hash
from uqa_ray.data.schema import MAPS_DIR, TOKENIZER_DIR, USERS_FILES
from uqa_ray.io import InputError

CACHE_ENV = "UQA_RAY_CACHE"
SHIPPED_DIR = Path(__file__).resolve().parent / "taught"
# The code that shapes what the LM learns - model build, chat/prompt layout, question text, history rendering,
# the teaching loop and its loss - as modules or single definitions (config.source_hash): a change to any of
# them makes a new key (and a stale shipped copy); a change elsewhere in those files (how fast the encoder
# rows of a batch are read, say) does not.
TEACHING_CODE = ("uqa_ray.align.llm", "uqa_ray.align.instruct", "uqa_ray.align.soft_prompt",
                 *(f"uqa_ray.align.data:{d}" for d in ("FORMATS", "QUESTION_COLUMNS", "QuestionSplit.__init__",
                                                        "QuestionSplit.__len__", "QuestionSplit.messages",
                                                        "QuestionSplit.options", "QuestionSplit.gold_index")),
                 "uqa_ray.align.model:lm_loss", "uqa_ray.align.model:lm_loss_terms",
                 "uqa_ray.questions.render", "uqa_ray.questions.templates")
FINGERPRINT_KEYS = ("tokenizer", "catalog", "train_users", "config", "code")


def cache_dir() -> Path:
    """The user-level cache: `$UQA_RAY_CACHE`, else `$XDG_CACHE_HOME/uqa-ray`, else `~/.cache/uqa-ray`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "uqa-ray"


def _hash_tables(paths: list[Path], columns: list[str] | None = None) -> str:
    """Content hash of parquet tables (values, not file bytes, which depend on the writer's version)."""
    h = hashlib.sha256()
    for p in paths:
        t = pq.read_table(p, columns=columns)
        h.update(p.name.encode())
        for name in sorted(t.column_names):
            h.update(name.encode())
            h.update(json.dumps(t[name].to_pylist(), default=str).encode())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """Hash of the tokenizer files, so a different tokenizer gets a different tiny-LM folder."""
    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise InputError(f"tokenizer folder {tokenizer_dir} does not exist")
    h = hashlib.sha256()
    files = sorted(p for p in tokenizer_dir.iterdir() if p.is_file() and p.suffix in (".json", ".txt", ".jinja"))
    if not files:
        raise InputError(f"{tokenizer_dir}: no tokenizer files found")
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def catalog_fingerprint(data_dir: str | Path) -> str:
    maps = sorted((Path(data_dir) / MAPS_DIR).glob("*.parquet"))
    if not maps:
        raise InputError(f"{Path(data_dir) / MAPS_DIR}: no catalog tables (run `uqa-ray prepare` first)")
    return _hash_tables(maps)


def train_users_fingerprint(data_dir: str | Path) -> str:
    path = Path(data_dir) / USERS_FILES["train"]
    if not path.is_file():
        raise InputError(f"{path}: not found (run `uqa-ray prepare` first)")
    return _hash_tables([path], ["raw_user_id"])


def teaching_fingerprint(data_dir: str | Path, config: dict) -> dict[str, object]:
    """What a taught LM is keyed by (module docstring); `config` is the teaching config as a dict."""
    data_dir = Path(data_dir)
    return {"tokenizer": tokenizer_fingerprint(data_dir / TOKENIZER_DIR), "catalog": catalog_fingerprint(data_dir),
            "train_users": train_users_fingerprint(data_dir), "config": config,
            "code": source_hash(*TEACHING_CODE)}


def check_taught_for(info: dict, folder: Path, data_dir: str | Path) -> None:
    """Refuse a taught LM for data it was not taught for: another catalog or tokenizer (it would read
    names it never saw, in tokens it never learnt), or eval users it was taught on."""
    fp = info.get("taught", {}).get("fingerprint")
    if not fp:
        return  # a base model, or a folder taught before fingerprints: nothing recorded to check
    data_dir = Path(data_dir)
    here = {"catalog": catalog_fingerprint(data_dir), "tokenizer": tokenizer_fingerprint(data_dir / TOKENIZER_DIR),
            "train_users": train_users_fingerprint(data_dir)}
    bad = [k for k, v in here.items() if fp.get(k) != v]
    if bad:
        raise InputError(
            f"{folder}: this taught LM was built for another {' and '.join(bad)} (its "
            + ", ".join(f"{k} {fp.get(k)}" for k in bad) + f"; {data_dir} has "
            + ", ".join(f"{k} {here[k]}" for k in bad) + "). Use llm: tiny to teach one for this data "
            "(cached per user), or rebuild the shipped one: python experiments/teach_tiny_lm.py --ship")
