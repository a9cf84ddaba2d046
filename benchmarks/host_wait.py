"""Does ``MS_DEV_HOST_BLOCKING_RUN`` still remove MindSpore's host busy-wait? A figure and a JSON record.

    python -m benchmarks.host_wait            # writes benchmarks/host_wait.json and benchmarks/host_wait.png
    python -m benchmarks.host_wait --check    # the same, and exits 1 if the variable makes no difference
    python -m benchmarks.host_wait --quick --out /tmp/hw.json   # 2 rounds of 2 steps (a smoke test)

``moe_lab.env`` sets ``MS_DEV_HOST_BLOCKING_RUN=1`` before MindSpore's first operator: in PyNative mode
MindSpore's host thread otherwise busy-waits for each graph it launches, and on a 2-core machine that
spin takes a core from the kernels. The variable is not a documented, stable setting, so a MindSpore
upgrade may drop it; this benchmark notices. It times the shipped training step of notebook 04's live
model (``benchmarks.train_bench`` worker ``after``) in two processes, one with the variable at ``0``
(the busy-wait on) and one at ``1``, in turns, and reports the median step time of each and their ratio.
A ratio near 1 means the variable no longer changes anything: look for MindSpore's new switch (or a fix).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mindspore as ms  # noqa: E402

from benchmarks.train_bench import in_turns, our_worker  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "host_wait.json"
# below this ratio (median step with the busy-wait / without) the variable is taken to have no effect;
# measured here: 4.0x (51.9 ms against 12.9 ms per step, 2 cores, load average 3.8; benchmarks/host_wait.json)
EFFECT_RATIO = 1.3
SETTINGS = {"busy-wait on (MS_DEV_HOST_BLOCKING_RUN=0)": "0", "moe_lab.env (MS_DEV_HOST_BLOCKING_RUN=1)": "1"}


def summarise(step_s: dict[str, list[float]]) -> dict:
    """Medians (ms) of each setting's blocks, their ratio and the verdict, from seconds per step."""
    if set(step_s) != set(SETTINGS) or any(not v for v in step_s.values()):
        raise ValueError(f"step_s must give a non-empty list of step times for each of {list(SETTINGS)}")
    off, on = (statistics.median(step_s[name]) for name in SETTINGS)
    ratio = off / on
    verdict = ("MS_DEV_HOST_BLOCKING_RUN=1 still removes the host busy-wait" if ratio >= EFFECT_RATIO else
               "MS_DEV_HOST_BLOCKING_RUN makes no measurable difference: check whether MindSpore still reads it")
    return {"median_step_ms": {name: round(statistics.median(step_s[name]) * 1e3, 2) for name in SETTINGS},
            "block_step_ms": {name: [round(v * 1e3, 2) for v in step_s[name]] for name in SETTINGS},
            "ratio_busy_wait_over_blocking": round(ratio, 2), "effective": ratio >= EFFECT_RATIO, "verdict": verdict}


def plot_host_wait(summary: dict):
    """Median step time of each setting (bars) with every timed block (dots)."""
    names = list(SETTINGS)
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    medians = [summary["median_step_ms"][n] for n in names]
    ax.barh(range(len(names)), medians, color=["tab:red", "tab:green"], alpha=0.6, height=0.5)
    for i, name in enumerate(names):
        blocks = summary["block_step_ms"][name]
        ax.scatter(blocks, [i] * len(blocks), color="black", s=10, zorder=3)
        ax.text(max(max(blocks), medians[i]), i, f"   median {medians[i]:.1f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_xlim(0, max(max(b) for b in summary["block_step_ms"].values()) * 1.35)
    ax.set(xlabel="ms per training step (bar: median block; dots: every block)",
           title=f"notebook-04 training step: {summary['ratio_busy_wait_over_blocking']:.1f}x slower with "
                 "MindSpore's host busy-wait")
    ax.title.set_fontsize(10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 steps (smoke test)")
    parser.add_argument("--rounds", type=int, default=9, help="blocks per setting (default 9)")
    parser.add_argument("--steps", type=int, default=20, help="steps per block (default 20)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the variable makes no difference")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON path; the figure goes beside it (.png)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        print(f"error: --rounds and --steps must be >= 1, got {args.rounds} and {args.steps}", file=sys.stderr)
        return 2
    rounds, steps = (2, 2) if args.quick else (args.rounds, args.steps)
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    processes = []
    try:
        for name, value in SETTINGS.items():
            processes.append(our_worker("after", "notebook", host_blocking_run=value, name=name))
        in_turns(processes, rounds, steps)
    finally:
        for process in processes:
            process.close()
    summary = summarise({p.name: p.step_s for p in processes})
    result = {
        "what": "training step of notebook 04's live model (moe_lab.lm.Trainer), with and without MindSpore's "
                "host busy-wait",
        "method": f"one process per setting, timed in turns: {rounds} rounds of one {steps}-step block each, after "
                  "compilation and 5 warm-up steps; figure = median block",
        **summary,
        "mindspore": ms.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average_1_5_15_min_at_start": load_at_start,
        "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()],
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m benchmarks.host_wait" + (" --quick" if args.quick else ""),
    }
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    fig = plot_host_wait(summary)
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)
    print(f"{summary['verdict']}: {summary['median_step_ms']} (ratio {summary['ratio_busy_wait_over_blocking']})")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 1 if args.check and not summary["effective"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
