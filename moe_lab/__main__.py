"""``python -m moe_lab COMMAND ...``: the course's command line.

Commands: ``budget`` (memory budget of a model, notebook 06), ``checkpoint`` (train the tiny MoE
language model's shipped checkpoint, notebook 03), ``ep`` (expert parallelism with msrun, notebook 05).
Bad input prints one line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "budget": "moe_lab.budget_cli",
    "checkpoint": "moe_lab.lm_cli",
    "ep": "moe_lab.ep_cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        given = repr(argv[0]) if argv else "nothing"
        print(f"error: command must be one of {', '.join(COMMANDS)}; got {given}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    try:
        return int(module.main(argv[1:]) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
