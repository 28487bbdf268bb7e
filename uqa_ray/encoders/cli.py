"""`uqa-ray params`: dense / embedding / total parameter counts of every encoder preset.

Counted on the meta device (nothing is allocated, so the 1.2B preset is instant). Vocabulary sizes
default to the official release's (UQABENCH.md section 2); `--vocab <data>/meta.json` uses a prepared
folder's.
"""
from __future__ import annotations

import argparse

from uqa_ray.encoders.base import count_params
from uqa_ray.encoders.config import INPUT_MODES
from uqa_ray.encoders.presets import PAPER_DENSE, PRESETS, load_vocab, preset_config


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab", help="a prepared folder's meta.json (default: official vocabulary sizes)")
    p.add_argument("--max-len", type=int, default=None, help="sequence length (default: each preset's)")
    p.add_argument("--input-mode", choices=INPUT_MODES, default="full")


def run(args: argparse.Namespace) -> int:
    vocab = load_vocab(args.vocab) if args.vocab else None
    over = {"input_mode": args.input_mode} | ({"max_len": args.max_len} if args.max_len else {})
    print(f"{'preset':<20}{'encoder':<11}{'L':>3}{'d':>6}{'H':>4}{'dense':>15}{'embeddings':>15}"
          f"{'total':>15}{'paper':>10}")
    for name in PRESETS:
        cfg = preset_config(name, vocab, **over)
        n = count_params(cfg)
        paper = f"{PAPER_DENSE[name] / 1e6:.1f}M" if name in PAPER_DENSE else "-"
        print(f"{name:<20}{cfg.name:<11}{cfg.n_layers:>3}{cfg.d_model:>6}{cfg.n_heads:>4}{n['dense']:>15,}"
              f"{n['embeddings']:>15,}{n['total']:>15,}{paper:>10}")
    return 0
