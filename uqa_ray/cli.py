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
from uqa_ray.io import InputError

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help)
    "synth": ("uqa_ray.data.synthetic", "generate a Taobao-like click log with planted truth"),
    "prepare": ("uqa_ray.data.prepare", "Ray Data: raw log -> official Arrow files + maps + tokenizer"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uqa-ray", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
    # Parse the command name first, then let its module add its own arguments.
    args, _ = parser.parse_known_args(argv)
    mod = importlib.import_module(args._module)
    p = argparse.ArgumentParser(prog=f"uqa-ray {args.command}", description=COMMANDS[args.command][1])
    mod.configure(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    argv.remove(args.command)
    cmd_args = p.parse_args(argv)
    try:
        rc = mod.run(cmd_args)
    except (InputError, ConfigError) as e:
        print(f"uqa-ray {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
