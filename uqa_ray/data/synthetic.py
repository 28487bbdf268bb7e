"""`uqa-ray synth`: a Taobao-like click log with planted, known ground truth.

Catalog (synth_catalog.py): category -> brand -> shop/seller -> item, Zipf-like popularity, Chinese
names. Users: a long-term interest mix over three categories, an interest trajectory of 2-4 phases,
each dominated by one category (the last phase is the current interest and always covers the last
`recent` clicks), sessions in which a click may stick to the previous click's category, a preferred
brand per category, noise clicks on globally popular items, and lognormal sequence lengths.

Planted truth (`truth.parquet`, one row per raw user id, raw ids):
  lt_top3_cate   the 3 categories with the largest EXPECTED share of the whole history, decreasing
  lt_top3_share  those expected shares (consecutive shares differ by >= `margin`, see `_plan_users`)
  current_cate   dominant category of the final phase (>= `recent` last clicks)
  trajectory_cate  dominant category of each phase, oldest first (all distinct)
  phase_len      clicks per phase as generated (before any filtering)
  current_brand  the user's preferred brand in current_cate
  lt_top3_brand  the user's preferred brand in each of lt_top3_cate
Outputs: clicks/part-NNNNN.parquet (user_id, item_id, ts; rows shuffled within a chunk of users and
spread over `shards_per_chunk` files), items.parquet, truth.parquet, synth.json. Deterministic by
seed; the paper preset is generated `users_per_chunk` users at a time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uqa_ray.config import build, parse_dotted, to_dict
from uqa_ray.data.schema import CLICK_SCHEMA
from uqa_ray.data.synth_catalog import RAW_OFFSETS, Catalog, build_catalog, raw_ids
from uqa_ray.io import atomic_path


@dataclass(frozen=True)
class SynthConfig:
    """Defaults are the `small` preset (the embedded default)."""

    n_users: int = 2500
    n_cates: int = 50
    n_brands: int = 300
    n_shops: int = 500  # sellers are 1:1 with shops
    n_items: int = 5000
    len_median: float = 45.0  # lognormal sequence lengths (heavy tail)
    len_sigma: float = 0.55
    len_min: int = 12
    len_max: int = 3000
    n_clicks: int = 0  # if > 0, lengths are rescaled so that the log has exactly this many clicks
    cate_zipf: float = 0.8  # popularity exponents (rank r has weight (r+1)^-s)
    brand_zipf: float = 1.0
    item_zipf: float = 0.8
    lt_weights: tuple[float, ...] = (0.55, 0.30, 0.15)  # long-term mix template (3 categories)
    lt_jitter: float = 0.15  # lognormal jitter of that template per user
    focus: float = 0.5  # share of a phase's clicks on its dominant category
    noise: float = 0.08  # share of clicks on globally popular items
    stick: float = 0.2  # P(a click keeps the previous click's category within a session)
    brand_loyalty: float = 0.6  # P(a click goes to the user's preferred brand of the category)
    phases: tuple[int, ...] = (2, 4)  # number of trajectory phases: inclusive range (lo, hi)
    traj_from_lt: float = 0.7  # P(a phase is dominated by one of the long-term categories)
    min_phase_len: int = 10
    recent: int = 20  # the final phase always covers at least the last `recent` clicks
    margin: float = 0.07  # min gap between consecutive expected shares of the planted top 3 (+4th)
    session_mean: float = 6.0  # clicks per session (geometric)
    click_gap_s: float = 45.0  # mean gap within a session
    session_gap_s: float = 20 * 3600.0  # mean gap between sessions
    start_ts: int = 1511539200  # 2017-11-25, the start of Taobao's UserBehavior log
    users_per_chunk: int = 10000
    shards_per_chunk: int = 2
    lang: Literal["zh", "en"] = "zh"

    def __post_init__(self):
        if not self.n_items >= self.n_shops >= self.n_brands >= self.n_cates >= 4:
            raise ValueError("need n_items >= n_shops >= n_brands >= n_cates >= 4")
        if self.focus + self.noise >= 1 or min(self.focus, self.noise, self.stick) < 0:
            raise ValueError("need focus, noise, stick >= 0 and focus + noise < 1")
        if len(self.lt_weights) != 3 or min(self.lt_weights) <= 0:
            raise ValueError(f"lt_weights must be 3 positive numbers, got {self.lt_weights}")
        if len(self.phases) != 2 or not 1 <= self.phases[0] <= self.phases[1] <= 4:
            raise ValueError(f"phases must satisfy 1 <= lo <= hi <= 4, got {self.phases}")
        if not 1 <= self.len_min <= self.len_max:
            raise ValueError("need 1 <= len_min <= len_max")
        if self.users_per_chunk < 1 or self.shards_per_chunk < 1 or self.n_users < 1:
            raise ValueError("n_users, users_per_chunk and shards_per_chunk must be >= 1")


# Presets are overrides of the defaults (= small). Paper counts: UQABENCH.md section 2.
PRESETS: dict[str, dict] = {
    "tiny": dict(n_users=250, n_cates=40, n_brands=120, n_shops=200, n_items=1500, len_median=62.0,
                 len_sigma=0.15, len_min=45, len_max=110, users_per_chunk=64),
    "small": {},
    "paper": dict(n_users=240_000, n_cates=9330, n_brands=149_750, n_shops=268_446, n_items=1_000_000,
                  len_median=95.0, len_sigma=0.8, n_clicks=31_317_087, cate_zipf=0.9, brand_zipf=1.0,
                  item_zipf=1.0),
}

TRUTH_SCHEMA = pa.schema([
    ("user_id", pa.int64()), ("lt_top3_cate", pa.list_(pa.int64())), ("lt_top3_share", pa.list_(pa.float64())),
    ("current_cate", pa.int64()), ("trajectory_cate", pa.list_(pa.int64())), ("phase_len", pa.list_(pa.int64())),
    ("current_brand", pa.int64()), ("lt_top3_brand", pa.list_(pa.int64())),
])


def preset(name: str, overrides: dict | None = None) -> SynthConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return build(SynthConfig, PRESETS[name], overrides)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a stateless hash, so a user's preferred brand needs no storage."""
    x = x.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _preferred_brand(cat: Catalog, salt: int, users: np.ndarray, cates: np.ndarray) -> np.ndarray:
    h = _mix64(users.astype(np.uint64) * np.uint64(1_000_003) + cates.astype(np.uint64) + np.uint64(salt))
    return cat.brands_of_cate.sample(cates, (h >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def _lengths(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    raw = rng.lognormal(np.log(cfg.len_median), cfg.len_sigma, cfg.n_users)
    if cfg.n_clicks:
        raw *= cfg.n_clicks / raw.sum()
    lens = np.clip(np.rint(raw), cfg.len_min, cfg.len_max).astype(np.int64)
    for _ in range(100):  # hit n_clicks exactly: nudge random users by one click within bounds
        diff = cfg.n_clicks - int(lens.sum()) if cfg.n_clicks else 0
        if diff == 0:
            break
        idx = rng.choice(cfg.n_users, size=min(abs(diff), cfg.n_users), replace=False)
        lens[idx] = np.clip(lens[idx] + np.sign(diff), cfg.len_min, cfg.len_max)
    return lens


def _draw_cates(cat: Catalog, rng: np.random.Generator, n: int) -> np.ndarray:
    cum = np.cumsum(cat.cate_pop)
    return np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), cat.n_cates - 1)


def _distinct_cols(out: np.ndarray, cols, choose) -> None:
    """Fill out[:, j] for j in cols with `choose(rows)` draws distinct from every earlier column."""
    for j in cols:
        todo = np.arange(len(out))
        for _ in range(1000):
            d = choose(todo)
            clash = (out[todo, :j] == d[:, None]).any(1)
            out[todo[~clash], j] = d[~clash]
            todo = todo[clash]
            if not len(todo):
                break
        else:
            raise ValueError("cannot draw distinct categories; increase n_cates")


def _phases(cfg: SynthConfig, rng: np.random.Generator, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(number of phases, (n, 4) clicks per phase): phases >= min_phase_len, the last >= recent."""
    m = len(L)
    p = np.minimum(rng.integers(cfg.phases[0], cfg.phases[1] + 1, m),
                   1 + np.maximum(L - cfg.recent, 0) // cfg.min_phase_len)
    used = np.arange(4) < p[:, None]
    mins = np.where(used, np.where(np.arange(4) == (p - 1)[:, None], cfg.recent, cfg.min_phase_len), 0)
    r = np.where(used, rng.random((m, 4)) + 0.3, 0.0)
    pl = mins + np.floor(r / r.sum(1, keepdims=True) * np.maximum(L - mins.sum(1), 0)[:, None]).astype(np.int64)
    pl[np.arange(m), p - 1] += L - pl.sum(1)
    return p, pl


def _expected_top3(cfg: SynthConfig, cat: Catalog, lt, w, dom, plen, L):
    """Top 3 categories by EXPECTED share of the whole history, their shares, and whether consecutive
    shares (and the 4th, or the largest noise share) are at least `margin` apart."""
    cand = np.concatenate([lt, dom], 1)  # every category a user can favour (-1 = unused phase)
    frac = plen / L[:, None]
    share = ((1.0 - cfg.focus - cfg.noise) * (w[:, None, :] * (lt[:, None, :] == cand[:, :, None])).sum(2)
             + cfg.focus * (frac[:, None, :] * (dom[:, None, :] == cand[:, :, None])).sum(2)
             + cfg.noise * cat.cate_pop[np.maximum(cand, 0)])
    dup = (cand[:, :, None] == cand[:, None, :]) & np.tri(cand.shape[1], k=-1, dtype=bool)[None]
    share[dup.any(2) | (cand < 0)] = -1.0
    order = np.argsort(-share, 1, kind="stable")
    s = np.take_along_axis(share, order, 1)
    s4 = np.maximum(s[:, 3], cfg.noise * cat.cate_pop.max())
    ok = (s[:, 0] - s[:, 1] >= cfg.margin) & (s[:, 1] - s[:, 2] >= cfg.margin) & (s[:, 2] - s4 >= cfg.margin)
    return np.take_along_axis(cand, order[:, :3], 1), s[:, :3], ok


def _plan_users(cfg: SynthConfig, cat: Catalog, rng: np.random.Generator, lens: np.ndarray):
    """Per user: long-term categories + weights, phases (lengths, dominant categories), planted truth.

    Users whose planted top 3 is ambiguous (two expected shares closer than `margin`) get new
    weights and phases (up to 50 times; the rare rest keep their last draw and are counted), so that
    the truth is a property of the user, not a coin flip of sampling.
    """
    n = len(lens)
    lt = np.full((n, 3), -1, np.int64)
    _distinct_cols(lt, range(3), lambda rows: _draw_cates(cat, rng, len(rows)))
    w, top_share = np.empty((n, 3)), np.empty((n, 3))
    dom, plen = np.full((n, 4), -1, np.int64), np.zeros((n, 4), np.int64)
    nph, top3 = np.zeros(n, np.int64), np.empty((n, 3), np.int64)
    todo = np.arange(n)
    for _ in range(50):
        m, lt_t = len(todo), lt[todo]
        ww = np.asarray(cfg.lt_weights) * rng.lognormal(0, cfg.lt_jitter, (m, 3))
        w[todo] = -np.sort(-ww / ww.sum(1, keepdims=True), 1)
        nph[todo], plen[todo] = _phases(cfg, rng, lens[todo])
        d = np.full((m, 4), -1, np.int64)
        _distinct_cols(d, range(4), lambda rows: np.where(  # a long-term category or a fresh one
            rng.random(len(rows)) < cfg.traj_from_lt, lt_t[rows, rng.integers(0, 3, len(rows))],
            _draw_cates(cat, rng, len(rows))))
        d[np.arange(4) >= nph[todo][:, None]] = -1
        dom[todo] = d
        top3[todo], top_share[todo], ok = _expected_top3(cfg, cat, lt_t, w[todo], d, plen[todo], lens[todo])
        todo = todo[~ok]
        if not len(todo):
            break
    return lt, w, dom, plen, nph, top3, top_share, len(todo)


def _chunk(cfg: SynthConfig, cat: Catalog, rng: np.random.Generator, salt: int, first_user: int,
           user_raw: np.ndarray, lens: np.ndarray) -> tuple[pa.Table, pa.Table, int]:
    n = len(lens)
    lt, w, dom, plen, nph, top3, top_share, ambiguous = _plan_users(cfg, cat, rng, lens)
    N = int(lens.sum())
    uidx = np.repeat(np.arange(n), lens)
    starts = np.cumsum(lens) - lens
    pos = np.arange(N) - starts[uidx]
    phase = (pos[:, None] >= np.cumsum(plen, 1)[uidx, :3]).sum(1)
    # Which component each click comes from: noise, the phase's focus, or the long-term mix.
    comp = rng.random(N)
    noise = comp < cfg.noise
    focus = ~noise & (comp < cfg.noise + cfg.focus)
    cw = np.cumsum(w, 1)[uidx]
    u = rng.random(N)
    lt_cat = lt[uidx, (u > cw[:, 0]).astype(np.int64) + (u > cw[:, 1])]
    noise_item = np.searchsorted(cat.items_global, rng.random(N) * cat.items_global[-1], side="right")
    noise_item = np.minimum(noise_item, len(cat.item_cate) - 1)
    cate = np.where(noise, cat.item_cate[noise_item], np.where(focus, dom[uidx, phase], lt_cat))
    # Sessions: a click either starts a session or may stick to the previous click's category.
    new_session = (pos == 0) | (rng.random(N) < 1.0 / cfg.session_mean)
    free = new_session | (rng.random(N) >= cfg.stick)
    src = np.maximum.accumulate(np.where(free, np.arange(N), -1))
    cate = cate[src]
    users = (first_user + uidx).astype(np.uint64)
    pref = rng.random(N) < cfg.brand_loyalty
    brand = np.where(pref, _preferred_brand(cat, salt, users, cate), cat.brands_of_cate.sample(cate, rng.random(N)))
    item = cat.items_of_brand.sample(brand, rng.random(N))
    item = np.where(noise & free, noise_item, item)
    gap = np.where(new_session, 600 + rng.exponential(cfg.session_gap_s, N), 1 + rng.exponential(cfg.click_gap_s, N))
    gap = gap.astype(np.int64)
    gap[starts] = cfg.start_ts + rng.integers(0, 30 * 86400, n)
    cs = np.cumsum(gap)
    ts = cs - (cs[starts] - gap[starts])[uidx]
    perm = rng.permutation(N)  # a log is not grouped by user: prepare must group and sort
    clicks = pa.table({"user_id": user_raw[uidx][perm], "item_id": cat.raw["item"][item][perm], "ts": ts[perm]},
                      schema=CLICK_SCHEMA)
    rows = np.arange(n)
    cur = dom[rows, nph - 1]
    u1 = np.arange(n, dtype=np.uint64) + np.uint64(first_user)
    rc, rb = cat.raw["cate"], cat.raw["brand"]
    lists = lambda a, k: pa.ListArray.from_arrays(np.concatenate([[0], np.cumsum(k)]), a)  # noqa: E731
    keep = np.arange(4) < nph[:, None]
    top_brand = _preferred_brand(cat, salt, np.repeat(u1, 3), top3.ravel())
    truth = pa.table({
        "user_id": user_raw,
        "lt_top3_cate": lists(rc[top3.ravel()], np.full(n, 3)),
        "lt_top3_share": lists(top_share.ravel(), np.full(n, 3)),
        "current_cate": rc[cur],
        "trajectory_cate": lists(rc[dom[keep]], nph),
        "phase_len": lists(plen[keep], nph),
        "current_brand": rb[_preferred_brand(cat, salt, u1, cur)],
        "lt_top3_brand": lists(rb[top_brand], np.full(n, 3)),
    }, schema=TRUTH_SCHEMA)
    return clicks, truth, ambiguous


def generate(cfg: SynthConfig, out: str | Path, seed: int = 0, preset_name: str | None = None) -> dict:
    """Write the log to `out` atomically; returns the summary stored in synth.json."""
    out = Path(out)
    with atomic_path(out) as tmp:
        (tmp / "clicks").mkdir(parents=True)
        cat = build_catalog(cfg, _rng(seed, 0))
        pq.write_table(cat.table, tmp / "items.parquet")
        rng = _rng(seed, 1)
        lens = _lengths(cfg, rng)
        user_raw = raw_ids(cfg.n_users, RAW_OFFSETS["user"], rng)
        salt = int(rng.integers(0, 2**62))
        shard = ambiguous = 0
        with pq.ParquetWriter(tmp / "truth.parquet", TRUTH_SCHEMA) as truth_w:
            for c, lo in enumerate(range(0, cfg.n_users, cfg.users_per_chunk)):
                hi = min(lo + cfg.users_per_chunk, cfg.n_users)
                clicks, truth, amb = _chunk(cfg, cat, _rng(seed, 2, c), salt, lo, user_raw[lo:hi], lens[lo:hi])
                ambiguous += amb
                truth_w.write_table(truth)
                for part in np.array_split(np.arange(clicks.num_rows), cfg.shards_per_chunk):
                    pq.write_table(clicks.slice(part[0], len(part)) if len(part) else clicks.slice(0, 0),
                                   tmp / "clicks" / f"part-{shard:05d}.parquet")
                    shard += 1
        summary = {"preset": preset_name, "seed": seed, "config": to_dict(cfg), "n_clicks": int(lens.sum()),
                   "n_users": cfg.n_users, "n_items": cfg.n_items, "n_shards": shard,
                   "ambiguous_truth_users": ambiguous}
        (tmp / "synth.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override SynthConfig fields: "
                             f"{', '.join(f.name for f in dataclasses.fields(SynthConfig))}")


def run(args: argparse.Namespace) -> int:
    cfg = preset(args.preset, parse_dotted(args.set))
    s = generate(cfg, args.out, seed=args.seed, preset_name=args.preset)
    print(f"synth: {s['n_users']} users, {s['n_clicks']} clicks, {s['n_items']} items, "
          f"{s['n_shards']} shards -> {args.out}")
    return 0
