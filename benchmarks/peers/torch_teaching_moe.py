"""The PyTorch peer of ``make bench``: one MoE layer as PyTorch teaching material writes it, against a dense FFN
with the same active FLOPs, timed the way ``benchmarks/moe_bench.py`` times MindSpore.

Same layer as the MindSpore benchmark: 4096 tokens, hidden 512, expert FFN 2048 (ReLU), 8 experts, top-2,
float32, CPU. The MoE is the per-expert boolean-mask loop with ``index_add_`` of makeMoE / LLMs-from-scratch
style; the dense FFN is 512 -> 4096 -> 512. The two take turns (two calls each per turn, the second one timed),
so a change of machine load hits both alike; the figure is the median over the turns.

It needs PyTorch, which the course never imports: ``make fixtures`` builds ``.venv-peers`` with the pinned CPU
build, then

    .venv-peers/bin/python benchmarks/peers/torch_teaching_moe.py --json benchmarks/torch_peer.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

T, H, FF, E, K = 4096, 512, 2048, 8, 2


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.w2 = nn.Linear(H, FF, bias=False), nn.Linear(FF, H, bias=False)

    def forward(self, x):
        return self.w2(F.relu(self.w1(x)))


class MaskLoopMoE(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(H, E, bias=False)
        self.experts = nn.ModuleList(Expert() for _ in range(E))

    def forward(self, x):
        weights, chosen = F.softmax(self.gate(x), -1).topk(K, -1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)
            if token.numel():
                out.index_add_(0, token, weights[token, slot, None] * expert(x[token]))
        return out


class DenseFFN(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.w2 = nn.Linear(H, K * FF, bias=False), nn.Linear(K * FF, H, bias=False)

    def forward(self, x):
        return self.w2(F.relu(self.w1(x)))


def in_turns(calls: dict, turns: int) -> dict:
    """Median seconds of each call, the calls taking turns (two each per turn, the second timed)."""
    times = {name: [] for name in calls}
    for fn in calls.values():  # warm-up
        fn(), fn()
    for _ in range(turns):
        for name, fn in calls.items():
            fn()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=9, help="timed turns (default 9, as make bench)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.turns < 1:
        parser.error(f"--turns must be at least 1, got {args.turns}")
    torch.manual_seed(0)
    x = torch.randn(T, H)
    xg = torch.randn(T, H, requires_grad=True)
    moe, dense = MaskLoopMoE(), DenseFFN()

    def train_step(model):
        def step():
            model.zero_grad(set_to_none=True)
            model(xg).pow(2).mean().backward()
        return step

    with torch.no_grad():
        fwd = in_turns({"dense": lambda: dense(x), "moe": lambda: moe(x)}, args.turns)
    both = in_turns({"dense": train_step(dense), "moe": train_step(moe)}, args.turns)
    flops = 2 * 2 * T * H * K * FF  # two matmuls of the active FFN
    result = {
        "what": "PyTorch mask-loop MoE vs the equal-FLOPs dense FFN, benchmarks/peers/torch_teaching_moe.py",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "turns": args.turns,
        "forward": {"dense_ms": fwd["dense"] * 1e3, "moe_ms": fwd["moe"] * 1e3, "ratio": fwd["moe"] / fwd["dense"],
                    "dense_gflop_per_s": flops / fwd["dense"] / 1e9},
        "forward+backward": {"dense_ms": both["dense"] * 1e3, "moe_ms": both["moe"] * 1e3,
                             "ratio": both["moe"] / both["dense"]},
    }
    for name in ("forward", "forward+backward"):
        r = result[name]
        print(f"{name:17s} dense FFN {r['dense_ms']:7.1f} ms   mask-loop MoE {r['moe_ms']:7.1f} ms   "
              f"ratio {r['ratio']:.2f}")
    print(f"dense FFN forward: {result['forward']['dense_gflop_per_s']:.0f} GFLOP/s (torch {torch.__version__}, "
          f"{result['threads']} threads)")
    if args.json:  # atomically: a reader never sees half a file
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False, suffix=".tmp") as fh:
            json.dump(result, fh, indent=1)
        os.replace(fh.name, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
