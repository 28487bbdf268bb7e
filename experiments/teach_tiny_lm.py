"""Teach the tiny default LM for an experiment's data (once per machine), and optionally ship it.

    python experiments/teach_tiny_lm.py                  # the README main command's data; ~50 min on 2 busy CPUs
                                                         # (docs/taught_lm.md)
    python experiments/teach_tiny_lm.py --ship           # ... and put it in the package (uqa_ray/align/taught/)
    python experiments/teach_tiny_lm.py --rekey "WHY"    # re-key the shipped copy after a move of teaching code

Builds the experiment's data and questions with the lab's own stages (reused when they exist), then
teaches the LM exactly as the experiment would (`grid.instruct` of its config) into the user cache
(align/lm_cache.py). `--ship` replaces the package's taught copy with it: the folder every fresh machine
then copies instead of teaching. Rebuild and ship after any change to the teaching code or config: a
test fails when the shipped copy no longer matches them (tests/align/test_lm_cache.py). Where a change
moved or renamed teaching code without changing what it teaches, `--rekey` renames the shipped copy to
the new key instead and records why (instruct.rekey_taught); no data, no Ray.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from uqa_ray.align.instruct import instruct_tiny_llm, rekey_taught
from uqa_ray.align.lm_cache import SHIPPED_DIR, cache_dir
from uqa_ray.config import ConfigError, build, load_yaml, parse_dotted
from uqa_ray.io import InputError, atomic_path
from uqa_ray.lab.config import LabConfig
from uqa_ray.lab.pipeline import prepared_data, question_set
from uqa_ray.raysetup import init_ray

MAIN = Path(__file__).resolve().parent / "configs" / "scale_model_size" / "local.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(MAIN), help="the experiment config whose data and grid.instruct to use")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="LabConfig overrides")
    p.add_argument("--workdir", default="lab", help="where the data stages write (as the experiment's --workdir)")
    p.add_argument("--ship", action="store_true", help="copy the taught folder into uqa_ray/align/taught/")
    p.add_argument("--rekey", metavar="WHY", help="re-key the shipped copy to the current teaching code, saying why "
                   "what it teaches is unchanged")
    args = p.parse_args(argv)
    try:
        cfg = build(LabConfig, load_yaml(args.config), parse_dotted(args.set), {"workdir": args.workdir})
        spec = cfg.grid  # its llm and instruct: the LM only
        if spec.llm != "tiny":
            raise ConfigError(f"{args.config}: grid.llm is {spec.llm!r}; only the tiny default is taught here")
        if args.rekey:
            for old in sorted(SHIPPED_DIR.glob("instruct-*")):
                print(f"[teach] re-keyed {old.name} -> {rekey_taught(old, spec.instruct, args.rekey).name}")
            return 0
        work = Path(cfg.workdir).resolve()
        init_ray()
        questions = question_set(cfg, prepared_data(cfg, work), work)
        folder = instruct_tiny_llm(questions, cache_dir() / "llm", spec.instruct)
    except (InputError, ConfigError) as e:
        print(f"teach_tiny_lm: error: {e}", file=sys.stderr)
        return 2
    print(f"[teach] taught LM: {folder}", flush=True)
    if args.ship:
        with atomic_path(SHIPPED_DIR / folder.name) as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
        for old in SHIPPED_DIR.glob("instruct-*"):
            if old.name != folder.name:
                shutil.rmtree(old)
        size = sum(f.stat().st_size for f in (SHIPPED_DIR / folder.name).iterdir())
        print(f"[teach] shipped {SHIPPED_DIR / folder.name} ({size / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
