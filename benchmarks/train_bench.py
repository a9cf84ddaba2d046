"""Training throughput of the tiny MoE LM's jitted train step (notebook 03), in tokens per second.

    python -m benchmarks.train_bench             # writes benchmarks/train_throughput.json
    python -m benchmarks.train_bench --quick     # notebook model only, a few steps (used by a test)
    python -m benchmarks.train_bench --out FILE

For each model (the notebook-03 live model and the checkpoint model of ``make checkpoint``) we time the
full jitted step (forward, loss with balancing, backward, Adam, bias update) on fixed batches: the first
call (compilation) is reported apart, then ``repeats`` timed blocks of ``steps`` steps each; the figure
is the median block. The baseline, measured in the same run, is the same model with one expert and
top-1 (a dense FFN of the same width, i.e. the same active parameters per token): the ratio shows what
the MoE costs on CPU, where the "dense" dispatch runs every expert on every token (E/K times the work).
Written atomically (temporary file, then rename).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "train_throughput.json"


def time_step(cfg, corpus, steps: int, repeats: int) -> dict:
    """Compile time and median tokens/s of ``repeats`` blocks of ``steps`` jitted train steps."""
    from moe_lab.lm import TinyMoELM, Trainer

    trainer = Trainer(TinyMoELM(cfg))
    rng = np.random.default_rng(0)
    batches = [corpus.batch("train", cfg.batch_size, cfg.context, rng)[:2] for _ in range(steps)]
    start = time.perf_counter()
    trainer.step(*batches[0])  # compiles
    compile_seconds = time.perf_counter() - start
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x, y in batches:
            trainer.step(x, y)
        blocks.append(time.perf_counter() - start)
    median = statistics.median(blocks)
    return {"compile_seconds": round(compile_seconds, 2), "median_block_seconds": round(median, 4),
            "tokens_per_second": round(steps * cfg.tokens_per_step / median, 1),
            "block_seconds": [round(b, 4) for b in blocks]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 steps x 2 repeats (smoke test)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    import moe_lab

    moe_lab.setup(seed=0)
    import mindspore as ms

    from moe_lab.lm import LMConfig
    from moe_lab.lm.checkpoint import CHECKPOINT_CONFIG
    from moe_lab.lm.corpus import load_corpus

    notebook = LMConfig(context=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_experts=8, top_k=1,
                        balance="aux", lr=1e-2, batch_size=8, seed=0)
    steps, repeats = (2, 2) if args.quick else (20, 5)
    models = [("notebook03_live", notebook)] + ([] if args.quick else [("checkpoint", CHECKPOINT_CONFIG)])
    load_at_start = [round(v, 2) for v in os.getloadavg()]  # the machine is shared: say how busy it was
    corpus = load_corpus()
    cases = {}
    for name, cfg in models:
        moe = time_step(cfg, corpus, steps, repeats)
        dense = time_step(dataclasses.replace(cfg, num_experts=1, top_k=1), corpus, steps, repeats)
        cases[name] = {
            "config": cfg.to_dict(), "tokens_per_step": cfg.tokens_per_step,
            "moe": moe, "baseline_one_expert": dense,
            "moe_over_baseline_time": round(dense["tokens_per_second"] / moe["tokens_per_second"], 2),
        }
        print(f"{name}: {moe['tokens_per_second']:,.0f} tokens/s (one-expert baseline "
              f"{dense['tokens_per_second']:,.0f}; compile {moe['compile_seconds']:.1f} s)")
    result = {
        "what": "jitted train step of moe_lab.lm (forward + balancing loss + backward + Adam), tokens/s",
        "method": f"median of {repeats} blocks of {steps} steps after a compiling first step; fixed batches",
        "cases": cases,
        "mindspore": ms.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average_1_5_15_min_at_start": load_at_start,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m benchmarks.train_bench" + (" --quick" if args.quick else ""),
    }
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
