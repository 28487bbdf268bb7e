"""`uqa-ray synth`: structure of the log, determinism, presets, and planted truth visible in raw clicks."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from uqa_ray import cli
from uqa_ray.config import ConfigError
from uqa_ray.data.schema import CATALOG_SCHEMA, CLICK_SCHEMA
from uqa_ray.data.synthetic import PRESETS, TRUTH_SCHEMA, SynthConfig, generate, preset


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "raw"
    generate(preset("tiny"), out, seed=7, preset_name="tiny")
    clicks = pq.read_table(out / "clicks").to_pandas()
    items = pq.read_table(out / "items.parquet").to_pandas()
    truth = pq.read_table(out / "truth.parquet").to_pandas()
    return out, clicks, items, truth


def test_files_and_schemas(tiny):
    out, clicks, items, truth = tiny
    cfg = preset("tiny")
    shards = sorted((out / "clicks").glob("part-*.parquet"))
    n_chunks = -(-cfg.n_users // cfg.users_per_chunk)
    assert len(shards) == n_chunks * cfg.shards_per_chunk
    for s in shards:
        assert pq.read_schema(s).equals(CLICK_SCHEMA)
    assert pq.read_schema(out / "items.parquet").equals(CATALOG_SCHEMA)
    assert pq.read_schema(out / "truth.parquet").equals(TRUTH_SCHEMA)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == 7 and meta["preset"] == "tiny" and meta["config"]["n_users"] == cfg.n_users
    assert meta["n_clicks"] == len(clicks)


def test_catalog_hierarchy_and_raw_ids(tiny):
    _, clicks, items, _ = tiny
    cfg = preset("tiny")
    assert len(items) == cfg.n_items and items.item_id.is_unique
    for col, n in [("cate_id", cfg.n_cates), ("brand_id", cfg.n_brands), ("shop_id", cfg.n_shops)]:
        assert items[col].nunique() == n
    # category -> brand -> shop: each child has exactly one parent; sellers are 1:1 with shops
    assert (items.groupby("brand_id").cate_id.nunique() == 1).all()
    assert (items.groupby("shop_id").brand_id.nunique() == 1).all()
    assert (items.groupby("shop_id").seller_id.nunique() == 1).all()
    assert (items.groupby("seller_id").shop_id.nunique() == 1).all()
    # one name per id, unique across ids
    for key, name in [("cate_id", "cate_name"), ("brand_id", "brand_name"), ("shop_id", "shop_name")]:
        pairs = items[[key, name]].drop_duplicates()
        assert pairs[key].is_unique and pairs[name].is_unique
    # raw ids are large and not dense, so prepare's re-indexing is exercised
    for col in ["item_id", "cate_id", "brand_id", "shop_id", "seller_id"]:
        v = np.sort(items[col].unique())
        assert v.min() > 10**11 and (v.max() - v.min()) > 100 * len(v)
    assert clicks.user_id.min() > 10**11
    # titles are built from the brand and category names
    assert all(t.startswith(b) and t.endswith(c) for t, b, c in zip(items.title, items.brand_name, items.cate_name))


def test_users_lengths_time_and_popularity(tiny):
    _, clicks, items, truth = tiny
    cfg = preset("tiny")
    lens = clicks.groupby("user_id").size()
    assert len(lens) == cfg.n_users and lens.between(cfg.len_min, cfg.len_max).all()
    srt = clicks.sort_values(["user_id", "ts"])
    assert (srt.groupby("user_id").ts.diff().dropna() > 0).all()  # strictly increasing per user
    assert not clicks.user_id.is_monotonic_increasing  # rows are shuffled: prepare must sort
    assert set(clicks.item_id) <= set(items.item_id)
    # Zipf-like popularity: the top 10% of clicked items get far more than 10% of the clicks
    counts = np.sort(clicks.item_id.value_counts().to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() / counts.sum() > 0.25
    assert set(truth.user_id) == set(clicks.user_id)


def test_planted_truth_visible_in_raw_clicks(tiny):
    _, clicks, items, truth = tiny
    cfg = preset("tiny")
    df = clicks.merge(items[["item_id", "cate_id", "brand_id"]], on="item_id").sort_values(["user_id", "ts"])
    t = truth.set_index("user_id")
    cur = top3 = traj = brand = 0
    for u, g in df.groupby("user_id"):
        row, cates = t.loc[u], g.cate_id.to_numpy()
        recent = pd.Series(cates[-cfg.recent:]).value_counts()
        cur += recent.index[0] == row.current_cate
        top3 += set(pd.Series(cates).value_counts().index[:3]) == set(row.lt_top3_cate)
        bounds = np.cumsum([0, *row.phase_len])
        traj += [pd.Series(cates[a:b]).value_counts().index[0] for a, b in zip(bounds[:-1], bounds[1:])] == list(
            row.trajectory_cate)
        rb = g.brand_id.to_numpy()[-cfg.recent:][cates[-cfg.recent:] == row.current_cate]
        brand += pd.Series(rb).value_counts().index[0] == row.current_brand
        assert sum(row.phase_len) == len(g) and len(set(row.trajectory_cate)) == len(row.trajectory_cate)
        assert (row.trajectory_cate[-1] == row.current_cate
                and list(row.lt_top3_share) == sorted(row.lt_top3_share)[::-1])
    n = len(t)
    assert cur / n >= 0.9 and top3 / n >= 0.9 and traj / n >= 0.8 and brand / n >= 0.9, (cur, top3, traj, brand, n)


def test_deterministic_by_seed(tmp_path):
    cfg = preset("tiny", {"n_users": 60})
    generate(cfg, tmp_path / "a", seed=3)
    generate(cfg, tmp_path / "b", seed=3)
    generate(cfg, tmp_path / "c", seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["clicks/part-00000.parquet"] != _digest(tmp_path / "c")["clicks/part-00000.parquet"]


def test_exact_click_target_and_chunks(tmp_path):
    cfg = preset("tiny", {"n_users": 100, "n_clicks": 6000, "users_per_chunk": 30, "shards_per_chunk": 1})
    s = generate(cfg, tmp_path / "r", seed=0)
    clicks = pq.read_table(tmp_path / "r" / "clicks")
    assert s["n_clicks"] == clicks.num_rows == 6000 and s["n_shards"] == 4
    # a chunk's users live in its shard only: generation never needs more than one chunk in memory
    users = [set(pq.read_table(p)["user_id"].to_pylist()) for p in sorted((tmp_path / "r" / "clicks").iterdir())]
    assert all(not (a & b) for i, a in enumerate(users) for b in users[i + 1:])


def test_presets_are_a_table():
    assert set(PRESETS) == {"tiny", "small", "paper"}
    assert preset("small") == SynthConfig()  # the embedded default
    p = preset("paper")
    assert (p.n_cates, p.n_brands, p.n_shops, p.n_clicks) == (9330, 149_750, 268_446, 31_317_087)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="n_userz"):
        preset("tiny", {"n_userz": 3})
    with pytest.raises(ConfigError, match="focus"):
        preset("tiny", {"focus": 0.95})


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "raw"
    assert cli.main(["synth", "--preset", "tiny", "--out", str(out), "--seed", "1", "--set", "n_users=40"]) == 0
    assert json.loads((out / "synth.json").read_text())["config"]["n_users"] == 40
    assert cli.main(["synth", "--preset", "tiny", "--out", str(tmp_path / "x"), "--set", "lang=fr"]) == 2
    assert "lang" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_english_names(tmp_path):
    generate(preset("tiny", {"n_users": 20, "lang": "en"}), tmp_path / "en", seed=0)
    items = pq.read_table(tmp_path / "en" / "items.parquet").to_pandas()
    assert items.title.str.isascii().all() and items.cate_name.nunique() == preset("tiny").n_cates


def test_chinese_names_by_default(tiny):
    _, _, items, _ = tiny  # the fixture uses the preset as is: no `lang` override
    assert SynthConfig().lang == preset("tiny").lang == "zh"
    for col in ["title", "cate_name", "brand_name", "shop_name", "seller_name"]:
        assert items[col].str.contains(r"[\u4e00-\u9fff]").all(), col  # CJK ideographs in every name


def _by_time(out):
    """Raw clicks with their category, each user's clicks in time order."""
    clicks = pq.read_table(out / "clicks").to_pandas()
    items = pq.read_table(out / "items.parquet").to_pandas()
    return clicks.merge(items[["item_id", "cate_id"]], on="item_id").sort_values(["user_id", "ts"])


def _outside_share(df, truth):
    """Share of clicks on a category that is neither in the user's planted top 3 nor in its trajectory."""
    planted = {u: {*top3, *traj}
               for u, top3, traj in zip(truth.user_id, truth.lt_top3_cate, truth.trajectory_cate)}
    return np.mean([c not in planted[u] for u, c in zip(df.user_id, df.cate_id)])


def test_noise_clicks_fall_outside_the_interest_mix(tiny, tmp_path):
    out, _, _, truth = tiny
    on = _outside_share(_by_time(out), truth)
    quiet = tmp_path / "quiet"
    generate(preset("tiny", {"noise": 0.0}), quiet, seed=7)
    off = _outside_share(_by_time(quiet), pq.read_table(quiet / "truth.parquet").to_pandas())
    # Without noise only long-term categories that made neither the top 3 nor a phase are left
    # (~2%); noise = 0.08 adds clicks on popular items of any category (measured 8.5% vs 2.0%).
    assert on >= 0.05 and off <= on / 2, (on, off)


def _session_stats(df):
    """(median gap within / between sessions, clicks per session, P(same category as the previous
    click) within a session, the same across a session boundary). A gap of >= 600 s starts a session:
    the generator's between-session gaps are 600 s + Exp(session_gap_s)."""
    g = df.groupby("user_id")
    gap, same = g.ts.diff(), df.cate_id.eq(g.cate_id.shift())
    within, across = gap < 600, gap >= 600  # NaN (a user's first click) is neither
    n_sessions = across.sum() + df.user_id.nunique()
    return (gap[within].median(), gap[across].median(), len(df) / n_sessions,
            same[within].mean(), same[across].mean())


def test_short_term_sessions(tiny, tmp_path):
    out, _, _, _ = tiny
    cfg = preset("tiny")
    gap_in, gap_out, per_session, same_in, same_out = _session_stats(_by_time(out))
    assert gap_out > 100 * gap_in  # bursts of clicks (~30 s apart) separated by hours
    assert 0.7 * cfg.session_mean <= per_session <= cfg.session_mean  # shorter: sessions cut at a user's end
    # Within a session a click sticks to the previous click's category: more same-category pairs than
    # across a session boundary (measured 0.56 vs 0.44), and the gap closes with stick = 0 (0.46 vs 0.45).
    assert same_in - same_out >= 0.08, (same_in, same_out)
    generate(preset("tiny", {"stick": 0.0}), tmp_path / "loose", seed=7)
    *_, loose_in, loose_out = _session_stats(_by_time(tmp_path / "loose"))
    assert abs(loose_in - loose_out) < 0.04, (loose_in, loose_out)


def test_heavy_tailed_lengths_on_small(tiny, tmp_path):
    # `small` (sigma 0.55; generates in ~1 s) has the tail; `tiny` (sigma 0.15) is near-normal on purpose.
    generate(preset("small"), tmp_path / "small", seed=0)
    lens = pq.read_table(tmp_path / "small" / "clicks", columns=["user_id"]).to_pandas().groupby("user_id").size()
    # measured: max 282, median 45, skew 2.0
    assert lens.max() >= 3 * lens.median() and lens.skew() > 1, (lens.max(), lens.median(), lens.skew())
    tiny_lens = tiny[1].groupby("user_id").size()
    assert tiny_lens.max() < 3 * tiny_lens.median()  # the statistic does tell the two apart
