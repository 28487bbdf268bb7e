"""`uqa-ray <command>`: one subcommand per stage.

The command table is data: each entry names the module that defines `configure(parser)` and
`run(args) -> int | None`. Modules are imported only when their command runs, so `uqa-ray --help`
stays fast and a stage's heavy imports (Ray, DeepSpeed) never load for another stage.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from uqa_ray.config import ConfigError
from uqa_ray.io import EXIT_BAD_INPUT, InputError

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help)
    "synth": ("uqa_ray.data.synthetic", "generate a Taobao-like click log with planted truth"),
    "prepare": ("uqa_ray.lab.prepare_cli", "Ray Data: raw log -> official Arrow files + maps + tokenizer"),
    "questions": ("uqa_ray.questions.cli", "generate the 7 sub-tasks' questions (align_data_{train,eval}.arrow)"),
    "score": ("uqa_ray.questions.score_cli", "score predictions: official rule / option likelihood, CIs"),
    "pretrain": ("uqa_ray.pretrain.cli", "Ray Train + DeepSpeed: pretrain one encoder, export it in fp32"),
    "plan": ("uqa_ray.pretrain.plan_cli", "memory per GPU of each preset x ZeRO stage x GPU count"),
    "params": ("uqa_ray.encoders.cli", "parameter counts (dense / embeddings / total) of every encoder preset"),
    "tune": ("uqa_ray.tune.cli",
             "Ray Tune grid: align + evaluate (encoders, baselines, controls), one record per trial"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        # No (known) command: the top-level parser prints the usage, the list or the error.
        parser = argparse.ArgumentParser(prog="uqa-ray", description=__doc__.split("\n")[0])
        sub = parser.add_subparsers(dest="command", metavar="command", required=True)
        for name, (_, help_) in COMMANDS.items():
            sub.add_parser(name, help=help_)
        parser.parse_args(argv)
        return EXIT_BAD_INPUT
    command, module = argv[0], COMMANDS[argv[0]][0]
    mod = importlib.import_module(module)
    p = argparse.ArgumentParser(prog=f"uqa-ray {command}", description=COMMANDS[command][1])
    mod.configure(p)
    args = p.parse_args(argv[1:])
    try:
        rc = mod.run(args)
    except (InputError, ConfigError) as e:
        print(f"uqa-ray {command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
