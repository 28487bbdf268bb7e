"""`uqa-ray prepare`: raw click log -> the official Arrow files + maps + tokenizer (data/prepare.py).

  uqa-ray prepare --raw DIR --out DIR [--tokenizer PATH] [--set key=value ...]
  uqa-ray prepare --official DIR --out DIR     (the Kaggle files, already prepared: validate + meta)

It lives with the lab, not the data stage, because the embedded tokenizer also learns the questions'
fixed text (questions/render.prompt_text), which the data stage does not import: the command and the
lab's prepare stage give the same folder.
"""
from __future__ import annotations

import argparse
import dataclasses

from uqa_ray.config import build, parse_dotted
from uqa_ray.data.prepare import PrepareConfig, prepare
from uqa_ray.questions.render import prompt_text


def configure(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", help="raw log folder: clicks/*.parquet + items.parquet (+ truth.parquet)")
    src.add_argument("--official", help="folder with the official Kaggle .arrow files (already prepared)")
    parser.add_argument("--out", required=True, help="prepared data folder (replaced atomically)")
    parser.add_argument("--tokenizer",
                        help="HF tokenizer folder or name (default: train one on the catalog and the prompt text)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help=f"override PrepareConfig: {', '.join(f.name for f in dataclasses.fields(PrepareConfig))}")


def run(args: argparse.Namespace) -> int:
    cfg = build(PrepareConfig, parse_dotted(args.set))
    if args.official:
        from uqa_ray.data.official import prepare_official

        meta = prepare_official(args.official, args.out, tokenizer=args.tokenizer)
    else:
        meta = prepare(args.raw, args.out, cfg, tokenizer=args.tokenizer, prompt_text=prompt_text())
    c = meta["counts"]
    print(f"prepare: {c.get('users', c.get('train_users'))} users, {c.get('clicks')} clicks, "
          f"vocab {meta['vocab']} -> {args.out}")
    return 0
