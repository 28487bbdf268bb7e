"""Controls that bound what the soft prompt contributes (issue 5, evaluation).

  none    no user embedding: zero soft tokens, the plain prompt (`soft=None` everywhere in decode.py).
          What the LLM answers from the question alone - the floor an encoder must beat.
  random  a random vector per soft token with the SAME L2 norm as the real soft token it replaces, so the
          LLM sees inputs of the usual scale that carry no user information. Seeded per (seed, row key),
          so a row's vector does not depend on how rows are batched.
  oracle  UPPER-BOUND CONTROL, synthetic data only: soft tokens made from the planted truth rather than
          from any encoder. Soft token k of a user is the mean of the LLM's own input embeddings of the
          tokens of the k-th planted name (e.g. the long-term top-3 categories, then the current interest),
          i.e. what the prompt would hold if the truth were written in it, averaged per name. No adapter is
          involved; it shows how well this LLM answers when handed the answer-bearing facts in soft form.
          `oracle_names` reads them from the prepared folder's truth.parquet (synthetic logs only):
          ORACLE_LAYOUT below, 12 names per user.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from uqa_ray.io import InputError

CONTROLS = ("none", "random", "oracle")
# (truth.parquet column, attribute map, names taken): the long-term top 3 categories, the current one,
# the interest path (oldest first, left-filled with its first phase to 4), then the same for brands.
ORACLE_LAYOUT = (("lt_top3_cate", "cate", 3), ("current_cate", "cate", 1), ("trajectory_cate", "cate", 4),
                 ("lt_top3_brand", "brand", 3), ("current_brand", "brand", 1))


def _row_generator(seed: int, key: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(key)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def random_like(soft: torch.Tensor, keys: Sequence[int], seed: int = 0) -> torch.Tensor:
    """(B, S, H) Gaussian directions rescaled to the per-token norms of `soft`, one stream per row key."""
    if soft.dim() != 3 or len(keys) != soft.shape[0]:
        raise ValueError(f"need soft (B, S, H) and B keys, got {tuple(soft.shape)} and {len(keys)} keys")
    b, s, h = soft.shape
    noise = torch.stack([torch.randn(s, h, generator=_row_generator(seed, k)) for k in keys])
    noise = noise / noise.norm(dim=-1, keepdim=True)
    norms = soft.detach().float().norm(dim=-1, keepdim=True).cpu()
    return (noise * norms).to(device=soft.device, dtype=soft.dtype)


def oracle_soft(embed: torch.nn.Module, tokenizer: Any, names: Sequence[Sequence[str]]) -> torch.Tensor:
    """(B, K, H): token k of row b = mean input embedding of the tokens of names[b][k] (see module doc)."""
    if not names:
        raise ValueError("empty batch")
    k = len(names[0])
    if k == 0 or any(len(n) != k for n in names):
        counts = [len(n) for n in names]
        raise ValueError(f"every row needs the same positive number of planted names, got {counts}")
    weight = embed.weight
    rows = []
    for b, row in enumerate(names):
        toks = []
        for name in row:
            ids = tokenizer.encode(name, add_special_tokens=False)
            if not ids:
                raise ValueError(f"row {b}: planted name {name!r} tokenizes to nothing")
            toks.append(weight[torch.tensor(ids, device=weight.device)].mean(0))
        rows.append(torch.stack(toks))
    return torch.stack(rows).detach()


def oracle_names(data_dir: str | Path, users: Sequence[int]) -> list[list[str]]:
    """The planted names of each user (ORACLE_LAYOUT), from truth.parquet and maps/{cate,brand}.parquet.

    An id the prepared data lacks (0 after re-indexing) is skipped and the row is filled to full length
    by repeating its own names, so every row has the same number of soft tokens.
    """
    import pyarrow.parquet as pq

    from uqa_ray.data.schema import MAPS_DIR, TRUTH_FILE

    data_dir = Path(data_dir)
    path = data_dir / TRUTH_FILE
    if not path.is_file():
        raise InputError(f"{path}: no planted truth (the oracle control needs a synthetic log)")
    truth = pq.read_table(path).to_pandas().set_index("user")
    names = {a: dict(zip(*pq.read_table(data_dir / MAPS_DIR / f"{a}.parquet", columns=["id", "name"])
                         .to_pydict().values())) for a in ("cate", "brand")}
    width = sum(n for _, _, n in ORACLE_LAYOUT)
    out = []
    for u in users:
        if int(u) not in truth.index:
            raise InputError(f"{path}: user {int(u)} has no planted truth")
        row, got = truth.loc[int(u)], []
        for col, attr, n in ORACLE_LAYOUT:
            ids = np.atleast_1d(np.asarray(row[col], dtype=np.int64)).tolist()
            ids = ([ids[0]] * (n - len(ids)) + ids)[-n:] if ids else []
            got += [names[attr][i] for i in ids if i and names[attr].get(i)]
        if not got:
            raise InputError(f"{path}: user {int(u)}: none of the planted ids is in the prepared data")
        out.append([got[i % len(got)] for i in range(width)])
    return out
