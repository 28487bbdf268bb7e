"""Benchmark: generate a paper-sized question set and time it -> bench/results/questions.json.

    python bench/questions.py                      # synthetic paper-like folder (built with numpy)
    python bench/questions.py --data DIR           # an existing prepared folder (uqa-ray prepare)
    python bench/questions.py --data bench/work/prepared-paper-0   # the paper-sized log, prepared
                                                                   # by bench/prepare.py

With --data the folder is only read: outputs go to --work/questions_out (its links to the data folder's
tokenizer, maps and eval files are remade on every run, so switching folders never mixes them). The
result records the generator's misrouting count per split and sub-task (questions dropped because the
official routing put them in another sub-task; expected 0) and, for --data, the folder's meta.json counts.

The synthetic folder has the paper's catalog sizes (994,447 items, 9,330 categories, 149,750 brands,
268,446 shops = sellers, UQABENCH.md section 2), ~180k users with lognormal lengths rescaled to a mean of
~170 clicks (31.3M clicks / ~180k users), users split 9:1 into train / eval, all ten official columns
(BPE ids from a byte-level BPE trained on the names), users/maps parquet files and tokenizer/. Users
have 5 interest categories and 3 phases, each dominated by one of them, so the interest questions are
not all ties. It is built in a child process (cached in --work) so the generation's peak memory is
measured alone. The generator runs with the default QuestionConfig: 7,192 eval questions, and the
alignment set at the same questions per user and proportions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uqa_ray.data.schema import PRETRAIN_FILES, PRETRAIN_SCHEMA, SEQ_TYPE, USERS_FILES
from uqa_ray.data.sequences import write_splits
from uqa_ray.io import atomic_path, write_json

SIZES = dict(items=994_447, cates=9_330, brands=149_750, shops=268_446)
ROOT = Path(__file__).resolve().parent


def _names(prefix_pool: list[str], n: int, rng, suffix: str) -> list[str]:
    a = rng.integers(len(prefix_pool), size=n)
    b = rng.integers(len(prefix_pool), size=n)
    return [f"{prefix_pool[x]}{prefix_pool[y]}{suffix}{i % 997}" for i, (x, y) in enumerate(zip(a, b))]


def build(folder: Path, n_users: int, mean_len: float, seed: int) -> dict:
    """Write a synthetic prepared folder (schema.py layout); returns its stats."""
    from tokenizers import ByteLevelBPETokenizer

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    chars = list("春夏秋冬红蓝绿白黑金银星月云山水花叶木石风雨雪光天地新潮雅韵优品佳乐美家")
    n_it, n_c, n_b, n_s = SIZES["items"], SIZES["cates"], SIZES["brands"], SIZES["shops"]
    names = {"cate": _names(chars, n_c, rng, "类"), "brand": _names(chars, n_b, rng, "牌"),
             "shop": _names(chars, n_s, rng, "店"), "seller": _names(chars, n_s, rng, "商")}
    # catalog: Zipf-like category sizes; brand and shop drawn per item
    cate_w = 1.0 / np.arange(1, n_c + 1) ** 0.7
    item_cate = np.sort(rng.choice(n_c, size=n_it, p=cate_w / cate_w.sum())) + 1
    item_brand = rng.integers(1, n_b + 1, size=n_it)
    item_shop = rng.integers(1, n_s + 1, size=n_it)
    titles = [f"{names['brand'][b - 1][:2]}{names['cate'][c - 1][:2]}{chars[i % len(chars)]}款{i}"
              for i, (b, c) in enumerate(zip(item_brand, item_cate))]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(titles[::50] + names["cate"] + names["brand"][::10], vocab_size=8000,
                            show_progress=False)
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer" / "tokenizer.json"))

    def token_lists(texts: list[str]) -> pa.ListArray:  # index 0 = padding (empty list)
        ids = [[]] + [e.ids for e in tok.encode_batch(texts)]
        return pa.array(ids, pa.list_(pa.int64()))

    bpe = {"title": token_lists(titles), **{k: token_lists(v) for k, v in names.items()}}
    maps = folder / "maps"
    maps.mkdir(exist_ok=True)
    ids = np.arange(1, n_it + 1)
    pq.write_table(pa.table({"item": ids, "raw_item_id": ids + 10**7, "cate": item_cate, "brand": item_brand,
                             "shop": item_shop, "seller": item_shop, "title": titles}), maps / "items.parquet")
    for k, v in names.items():
        pq.write_table(pa.table({"id": np.arange(1, len(v) + 1), "raw_id": np.arange(1, len(v) + 1) + 10**7,
                                 "name": v}), maps / f"{k}.parquet")
    cate_items = np.searchsorted(item_cate, np.arange(1, n_c + 2))  # items of cate c: [s[c-1], s[c])

    # users: lengths lognormal rescaled to mean_len; 5 interest categories, 3 phases
    lens = np.clip(rng.lognormal(np.log(mean_len) - 0.18, 0.6, n_users), 20, 1500).astype(np.int64)
    ucats = rng.choice(n_c, size=(n_users, 5), p=cate_w / cate_w.sum()) + 1
    dom = rng.integers(0, 5, size=(n_users, 3))
    n_eval = n_users // 10
    stats = {"users": n_users, "clicks": int(lens.sum()), "eval_users": n_eval}
    def chunks():  # eval users first, then train, 8,192 users at a time, in the prepared format
        for lo, hi in ((0, n_eval), (n_eval, n_users)):
            for a in range(lo, hi, 8192):
                b = min(a + 8192, hi)
                L = lens[a:b]
                u = np.repeat(np.arange(a, b), L)
                pos = np.arange(L.sum()) - np.repeat(np.cumsum(L) - L, L)
                phase = pos * 3 // np.repeat(L, L)
                r = rng.random(len(u))
                own = np.where(r < 0.55, dom[u, phase], rng.integers(0, 5, len(u)))
                cate = np.where(r < 0.9, ucats[u, own], rng.choice(n_c, size=len(u), p=cate_w / cate_w.sum()) + 1)
                start, size = cate_items[cate - 1], cate_items[cate] - cate_items[cate - 1]
                item = start + (size * rng.random(len(u)) ** 3).astype(np.int64) + 1  # popular items first
                per = {"item": item, "cate": item_cate[item - 1], "brand": item_brand[item - 1],
                       "shop": item_shop[item - 1], "seller": item_shop[item - 1]}
                outer = pa.array(np.concatenate([[0], np.cumsum(L)]).astype(np.int32))
                one = pa.array(np.arange(len(u) + 1, dtype=np.int32))
                cols = [pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(one, pa.array(per[c])))
                        for c in ("item", "cate", "brand", "shop", "seller")]
                for c in ("title", "cate", "shop", "brand", "seller"):
                    src = per["item"] if c == "title" else per[c]
                    cols.append(pa.ListArray.from_arrays(outer, bpe[c].take(pa.array(src))).cast(SEQ_TYPE))
                users = np.arange(a, b, dtype=np.int64)
                side = {"user": pa.array(users + 1), "raw_user_id": pa.array(users + 10**8),
                        "eval": pa.array(users < n_eval), "length": pa.array(L),
                        "ts": pa.ListArray.from_arrays(outer, pa.array(pos.astype(np.int64)))}
                table = pa.Table.from_arrays(cols, schema=PRETRAIN_SCHEMA)
                for name, col in side.items():
                    table = table.append_column(name, col)
                yield table

    write_splits(chunks(), folder, PRETRAIN_FILES, USERS_FILES, rows_per_batch=8192)  # the lab's own writer
    (folder / "meta.json").write_text(json.dumps({"synthetic": "bench/questions.py", **stats}))
    stats["build_s"] = time.perf_counter() - t0
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="an existing prepared folder (skips the synthetic build)")
    p.add_argument("--work", default="/tmp/uqa_bench_questions", help="synthetic folder cache + outputs")
    p.add_argument("--users", type=int, default=180_000)
    p.add_argument("--mean-len", type=float, default=170.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default=str(ROOT / "results" / "questions.json"))
    args = p.parse_args()
    work = Path(args.work)
    synth = work / f"synthetic_u{args.users}_l{int(args.mean_len)}_s{args.seed}"
    if args.build_only:
        with atomic_path(synth) as tmp:
            tmp.mkdir(parents=True)
            stats = build(tmp, args.users, args.mean_len, args.seed)
            (tmp / "build.json").write_text(json.dumps(stats))
        return
    if args.data is not None and not Path(args.data).is_dir():
        p.error(f"--data {args.data}: no such folder (a prepared folder: uqa-ray prepare / bench/prepare.py)")
    if args.data is None and not (synth / "build.json").exists():
        subprocess.run([sys.executable, __file__, "--build-only", "--work", args.work, "--users", str(args.users),
                        "--mean-len", str(args.mean_len), "--seed", str(args.seed)], check=True)
    data = Path(args.data).resolve() if args.data else synth
    build_stats = json.loads((synth / "build.json").read_text()) if args.data is None else None
    meta = json.loads((data / "meta.json").read_text()) if (data / "meta.json").is_file() else {}
    prepared_stats = {"counts": meta.get("counts"), "filters": meta.get("filters")} if args.data else None

    from uqa_ray.questions.generate import generate
    from uqa_ray.questions.render import count_tokens, load_tokenizer, text_k_prompts
    from uqa_ray.questions.score_files import score_files
    from uqa_ray.questions.spec import QuestionConfig

    out = work / "questions_out"
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    summary = generate(data, QuestionConfig(), out)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    # ru_maxrss counts the touched pages of the memory-mapped Arrow files too (shared, evictable)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
    anon = [int(line.split()[1]) / 2**20 for line in status.splitlines() if line.startswith("RssAnon:")]
    n_q = sum(s["questions"] for s in summary["splits"].values())
    misrouted = {split: {"total": sum(v["misrouted"] for v in s_["subtasks"].values()),
                         "per_subtask": {k: v["misrouted"] for k, v in s_["subtasks"].items()}}
                 for split, s_ in summary["splits"].items()}
    if any(m["total"] for m in misrouted.values()):
        print(f"warning: questions dropped for misrouting: {misrouted}", file=sys.stderr)

    # scoring the eval set (random letters, 1000 bootstrap draws) and Text-k prompts, for scale
    import pandas as pd

    q = pd.read_parquet(out / "questions_eval.parquet", columns=["row"])
    rng = np.random.default_rng(0)
    preds = out / "random_preds.jsonl"
    preds.write_text("".join(json.dumps({"row": int(r), "prediction": "ABCD"[rng.integers(4)]}) + "\n" for r in q.row))
    t1 = time.perf_counter()
    s, _, _ = score_files(out / "questions_eval.parquet", preds)
    score_s = time.perf_counter() - t1
    for f in ("tokenizer", "maps", "pretrain_data_eval.arrow", "users_eval.parquet"):
        if (out / f).is_symlink():  # a link left by a run on another folder
            (out / f).unlink()
        if not (out / f).exists():
            (out / f).symlink_to((data / f).resolve())
    tok = load_tokenizer(out)
    text = {}
    for k in (20, 50):
        t2 = time.perf_counter()
        prompts = text_k_prompts(out, "eval", k)
        n_tok = count_tokens(tok, prompts)
        text[f"text{k}"] = {"render_and_count_s": time.perf_counter() - t2,
                            "mean_prompt_tokens_bench_bpe": float(n_tok.mean())}
    result = {
        "data": "synthetic (numpy, bench/questions.py)" if args.data is None else args.data,
        "data_path": str(data),
        "synthetic": build_stats,
        "prepared": prepared_stats,
        "config": "QuestionConfig() defaults",
        "questions": {split: v["questions"] for split, v in summary["splits"].items()},
        "per_subtask": {split: {k: v["made"] for k, v in s_["subtasks"].items()}
                        for split, s_ in summary["splits"].items()},
        "attempts": {split: sum(v["tried"] for v in s_["subtasks"].values())
                     for split, s_ in summary["splits"].items()},
        "misrouted": misrouted,
        "wall_s": wall, "questions_per_s": n_q / wall,
        "eval_questions_per_s": summary["splits"]["eval"]["questions"] / (
            summary["splits"]["eval"]["generate_s"] + summary["splits"]["eval"]["write_s"]),
        "phases_s": {"load": summary["load_s"],
                     **{f"{sp}_{k}": v[k] for sp, v in summary["splits"].items() for k in ("generate_s", "write_s")}},
        "peak_rss_gib_incl_mmapped_files": peak_gib,
        "rss_anon_gib_after_generate": anon[0] if anon else None,
        "load_avg_1min_before_after": [load_before[0], load_after[0]],
        "output_bytes": {f.name: f.stat().st_size for f in out.iterdir()
                         if f.suffix in (".arrow", ".parquet") and not f.is_symlink()},
        "score_eval_random_s": score_s, "score_eval_random_acc": s["overall"]["acc"],
        "text_k": text,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "pyarrow": pa.__version__},
    }
    write_json(args.result, result)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
