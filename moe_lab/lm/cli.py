"""``python -m moe_lab checkpoint`` (``make checkpoint``): train the tiny MoE LM that ships in ``data/``.

Introduced in notebook 04; notebook 05 loads the result with ``moe_lab.lm.checkpoint.load_tiny_lm()``.

    python -m moe_lab checkpoint                      # CHECKPOINT_CONFIG, CHECKPOINT_STEPS -> data/tiny_moe_lm/
    python -m moe_lab checkpoint --steps 5 --out /tmp/ckpt --no-progress   # a quick trial elsewhere

The shipped checkpoint must come from ``CHECKPOINT_CONFIG`` and ``CHECKPOINT_STEPS`` of
``moe_lab.lm.checkpoint`` (a test checks that ``data/tiny_moe_lm/config.json`` equals ``CHECKPOINT_CONFIG``):
change them there, then rerun ``make checkpoint`` and commit the new files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np

from moe_lab.checks import check_int
from moe_lab.env import setup
from moe_lab.lm.checkpoint import CHECKPOINT_CONFIG, CHECKPOINT_DIR, CHECKPOINT_STEPS, save_checkpoint
from moe_lab.lm.corpus import DOMAINS, load_corpus
from moe_lab.lm.model import TinyMoELM
from moe_lab.lm.training import domain_expert_share, evaluate, train


def build_summary(model: TinyMoELM, result, corpus, steps: int, eval_batches: int = 8) -> dict:
    """What the checkpoint learned: losses, loads and specialisation, rounded for a readable JSON."""
    last = max(1, steps // 10)
    share = domain_expert_share(model, corpus, batches=max(1, eval_batches // 2))
    return {
        "steps": steps,
        "tokens_seen": steps * model.cfg.tokens_per_step,
        "train_ce_last_10pct": round(float(result.ce[-last:].mean()), 4),
        "val_ce_per_domain": {k: round(v, 4) for k, v in evaluate(model, corpus, batches=eval_batches).items()},
        "val_batches_per_domain": eval_batches,
        "load_share_last_10pct": np.round(result.load[-last:].sum(0) / result.load[-last:].sum((0, 2))[:, None],
                                          4).tolist(),
        "domains": list(DOMAINS),
        "val_top1_share_layer_domain_expert": np.round(share, 4).tolist(),
        "train_tokens_per_second": round(result.tokens_per_second, 1),
        "train_seconds": round(result.seconds + result.compile_seconds, 1),
        "mindspore": ms.__version__,
        "made_by": "python -m moe_lab checkpoint",
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m moe_lab checkpoint", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=CHECKPOINT_STEPS, help="training steps")
    parser.add_argument("--out", default=str(CHECKPOINT_DIR), help="output folder")
    parser.add_argument("--corpus", default=None, help="corpus folder (default data/corpus)")
    parser.add_argument("--eval-batches", type=int, default=8, help="validation batches per domain")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    steps = check_int("--steps", args.steps, minimum=1)
    eval_batches = check_int("--eval-batches", args.eval_batches, minimum=1)
    out = Path(args.out)
    if out.resolve() == CHECKPOINT_DIR.resolve() and (steps, eval_batches) != (CHECKPOINT_STEPS, 8):
        raise ValueError(f"--steps must be {CHECKPOINT_STEPS} (and --eval-batches 8) for the shipped checkpoint "
                         f"{CHECKPOINT_DIR.name}, got {steps}; use --out for a trial run")
    setup(seed=CHECKPOINT_CONFIG.seed)
    corpus = load_corpus(args.corpus)
    model = TinyMoELM(CHECKPOINT_CONFIG)
    start = time.perf_counter()
    result = train(model, corpus, steps, progress=not args.no_progress, desc="checkpoint")
    summary = build_summary(model, result, corpus, steps, eval_batches)
    save_checkpoint(model, out, summary)
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s: val loss {summary['val_ce_per_domain']['mean']:.3f} "
          f"nats/byte, {summary['train_tokens_per_second']:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
