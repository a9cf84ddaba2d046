"""``python -m moe_lab COMMAND ...``: the course's command line.

Commands: ``budget`` (memory budget of a model, notebook 07), ``checkpoint`` (train the tiny MoE
language model's shipped checkpoint, notebook 04), ``ep`` (expert parallelism with msrun, notebook 06).
``python -m moe_lab --help`` lists them; ``python -m moe_lab COMMAND --help`` explains one.
Bad input prints one line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import sys

from moe_lab.budget import cli as budget_cli
from moe_lab.lm import cli as lm_cli
from moe_lab.parallel import cli as ep_cli

COMMANDS = {
    "budget": (budget_cli.main, "memory budget of an MoE model from its config.json (notebook 07)"),
    "checkpoint": (lm_cli.main, "train the tiny MoE language model shipped in data/tiny_moe_lm (notebook 04)"),
    "ep": (ep_cli.main, "run the expert-parallel layer on N MindSpore processes with msrun (notebook 06)"),
}
USAGE = "usage: python -m moe_lab {" + ",".join(COMMANDS) + "} [options]   (COMMAND --help for its options)"


def help_text() -> str:
    lines = [USAGE, "", "MoE Lab's command line. Commands:"]
    lines += [f"  {name:<11} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(help_text())
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = repr(argv[0]) if argv else "nothing"
        print(f"error: command must be one of {', '.join(COMMANDS)}; got {given} (python -m moe_lab --help)",
              file=sys.stderr)
        return 2
    try:
        return int(COMMANDS[argv[0]][0](argv[1:]) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
