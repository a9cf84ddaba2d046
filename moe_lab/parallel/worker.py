"""One rank of an expert-parallel run: what ``msrun`` starts on every worker (``python -m moe_lab.parallel.worker``).

Introduced in notebook 06. ``moe_lab.parallel.cli`` (``python -m moe_lab ep``) launches the job, collects
each rank's ``rank_<r>.json`` and checks the output against one process with ``build_layer`` and
``make_tokens``, the same two functions the ranks use, so the layer and the tokens cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor

from moe_lab.ascend.backend import detect_backend
from moe_lab.checks import check_choice, check_float, check_int
from moe_lab.core.layer import MoELayer
from moe_lab.core.routers import SCORING_FUNCS, check_groups
from moe_lab.env import setup
from moe_lab.parallel.layer import Communicator, ExpertParallelMoE


def make_tokens(num_tokens: int, hidden_size: int, seed: int = 0) -> np.ndarray:
    """The global batch ``[num_tokens, hidden_size]`` (float32); rank ``r`` takes rows ``r*n:(r+1)*n``."""
    rng = np.random.default_rng([int(seed), 5])  # a stream distinct from the weights' seeds
    return rng.standard_normal((num_tokens, hidden_size)).astype(np.float32)


@dataclass
class WorkerConfig:
    """The block every rank builds and the tokens it routes (the config words of ``MoELayer``)."""

    tokens_per_rank: int = 16
    hidden_size: int = 32
    intermediate_size: int = 64
    num_experts: int = 8
    top_k: int = 2
    scoring_func: str = "softmax"
    n_shared_experts: int = 0
    seed: int = 0
    routed_scaling_factor: float = 1.0
    n_group: int = 1  # group-limited routing: the experts in n_group groups, a token uses at most topk_group
    topk_group: int = 1
    strategies: tuple[str, ...] = ("allgather",)
    repeats: int = 3
    fail_rank: int | None = None  # for tests: this rank raises after joining the job

    @property
    def topk_method(self) -> str:
        """How the router selects: plain top-k without groups; with groups, DeepSeek-V3's rule for sigmoid
        scores (``noaux_tc``) and DeepSeek-V2's for softmax (``group_limited_greedy``), as ``MoELayer``."""
        if self.n_group == 1:
            return "greedy"
        return "noaux_tc" if self.scoring_func == "sigmoid" else "group_limited_greedy"


def check_config(cfg: WorkerConfig) -> WorkerConfig:
    """Check the layer's settings before any process starts; every error names the argument and its value."""
    check_int("tokens_per_rank", cfg.tokens_per_rank, minimum=1)
    check_int("hidden_size", cfg.hidden_size, minimum=1)
    check_int("intermediate_size", cfg.intermediate_size, minimum=1)
    experts = check_int("num_experts", cfg.num_experts, minimum=1)
    check_int("top_k", cfg.top_k, minimum=1, maximum=experts)
    check_choice("scoring_func", cfg.scoring_func, SCORING_FUNCS)
    check_int("n_shared_experts", cfg.n_shared_experts, minimum=0)
    check_int("seed", cfg.seed, minimum=0)
    check_float("routed_scaling_factor", cfg.routed_scaling_factor, minimum=0.0, strict=True)
    check_groups(experts, cfg.top_k, cfg.topk_method, cfg.n_group, cfg.topk_group)
    return cfg


def build_layer(cfg: WorkerConfig) -> MoELayer:
    """The full layer every rank builds from the same seed (each keeps its slice of the routed experts)."""
    return MoELayer(cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.top_k,
                    scoring_func=cfg.scoring_func, n_shared_experts=cfg.n_shared_experts,
                    routed_scaling_factor=cfg.routed_scaling_factor, topk_method=cfg.topk_method,
                    n_group=cfg.n_group, topk_group=cfg.topk_group, seed=cfg.seed)


def add_layer_arguments(parser: argparse.ArgumentParser) -> None:
    """The layer's options, shared by the CLI and this worker, so the two cannot drift apart."""
    parser.add_argument("--tokens-per-rank", type=int, default=16, help="tokens each rank holds")
    parser.add_argument("--hidden-size", type=int, default=32, help="model width")
    parser.add_argument("--intermediate-size", type=int, default=64, help="width of one routed expert")
    parser.add_argument("--num-experts", type=int, default=8, help="routed experts")
    parser.add_argument("--top-k", type=int, default=2, help="experts per token")
    parser.add_argument("--scoring-func", default="softmax", help=f"router scores: {', '.join(SCORING_FUNCS)}")
    parser.add_argument("--n-shared-experts", type=int, default=0, help="always-on shared experts (replicated)")
    parser.add_argument("--routed-scaling-factor", type=float, default=1.0,
                        help="multiplies the routed experts' combine weights (openPangu, DeepSeek-V3: 2.5)")
    parser.add_argument("--n-group", type=int, default=1,
                        help="group-limited routing: number of expert groups (1 = no limit)")
    parser.add_argument("--topk-group", type=int, default=1, help="group-limited routing: groups a token may use")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the tokens")


def config_from_arguments(a: argparse.Namespace, **extra) -> WorkerConfig:
    """A ``WorkerConfig`` from the options of ``add_layer_arguments`` (plus ``extra`` fields)."""
    return WorkerConfig(tokens_per_rank=a.tokens_per_rank, hidden_size=a.hidden_size,
                        intermediate_size=a.intermediate_size, num_experts=a.num_experts, top_k=a.top_k,
                        scoring_func=a.scoring_func, n_shared_experts=a.n_shared_experts, seed=a.seed,
                        routed_scaling_factor=a.routed_scaling_factor, n_group=a.n_group,
                        topk_group=a.topk_group, **extra)


def layer_arguments(cfg: WorkerConfig) -> list[str]:
    """``cfg`` as the command-line options of ``add_layer_arguments`` (what the CLI passes to each rank)."""
    return ["--tokens-per-rank", str(cfg.tokens_per_rank), "--hidden-size", str(cfg.hidden_size),
            "--intermediate-size", str(cfg.intermediate_size), "--num-experts", str(cfg.num_experts),
            "--top-k", str(cfg.top_k), "--scoring-func", cfg.scoring_func,
            "--n-shared-experts", str(cfg.n_shared_experts), "--routed-scaling-factor", repr(cfg.routed_scaling_factor),
            "--n-group", str(cfg.n_group), "--topk-group", str(cfg.topk_group), "--seed", str(cfg.seed)]


def _atomic_write_json(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)  # the collector never sees half a file


def run_worker(cfg: WorkerConfig, out_dir: str) -> dict:
    """One rank: join the job, build the layer, run each strategy ``repeats`` times, write ``rank_<r>.json``."""
    t0 = time.perf_counter()
    setup(seed=cfg.seed)
    backend = detect_backend()
    comm = Communicator.from_environment(backend.device)
    t_init = time.perf_counter() - t0
    rank, w = comm.rank, comm.world_size
    if cfg.fail_rank is not None and rank == cfg.fail_rank:
        raise RuntimeError(f"injected failure on rank {rank} (--fail-rank {cfg.fail_rank})")
    ep = ExpertParallelMoE(build_layer(cfg), comm)
    tokens = make_tokens(cfg.tokens_per_rank * w, cfg.hidden_size, cfg.seed)
    x = Tensor(tokens[rank * cfg.tokens_per_rank:(rank + 1) * cfg.tokens_per_rank])
    results = {}
    for strategy in cfg.strategies:
        out, stats = ep(x, strategy)  # the reported output; also the warm-up (first calls build kernels)
        seconds = []
        for _ in range(cfg.repeats):
            start = time.perf_counter()
            _, stats = ep(x, strategy)  # the byte counts are the same every call; the times settle
            seconds.append(time.perf_counter() - start)
        results[strategy] = {
            "output": out.asnumpy().tolist(),
            "expert_load": stats.expert_load,
            "ranks_reached": stats.ranks_reached,
            "rows_processed": stats.rows_processed,
            "padded_rows": stats.padded_rows,
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "alltoall_bytes": (None if all(r.alltoall_bytes is None for r in stats.records) else
                               sum(r.sent if r.alltoall_bytes is None else r.alltoall_bytes for r in stats.records)),
            "collectives": [asdict(r) for r in stats.records],
            "comm_seconds": sum(r.seconds for r in stats.records),
            "forward_seconds": float(np.median(seconds)) if seconds else None,
        }
    data = {"rank": rank, "world_size": w, "backend": backend.name, "device": backend.device,
            "mindspore": ms.__version__, "experts": [ep.first, ep.last], "init_seconds": t_init,
            "strategies": results}
    _atomic_write_json(os.path.join(out_dir, f"rank_{rank}.json"), data)
    return data


def _parse(argv: list[str]) -> tuple[WorkerConfig, str]:
    p = argparse.ArgumentParser(prog="python -m moe_lab.parallel.worker",
                                description="One rank of an expert-parallel MoE run (started by msrun).")
    p.add_argument("--out-dir", required=True)
    add_layer_arguments(p)
    p.add_argument("--strategies", default="allgather")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fail-rank", type=int, default=None)
    a = p.parse_args(argv)
    cfg = config_from_arguments(a, strategies=tuple(a.strategies.split(",")), repeats=a.repeats,
                                fail_rank=a.fail_rank)
    return cfg, a.out_dir


def main(argv: list[str] | None = None) -> int:
    cfg, out_dir = _parse(sys.argv[1:] if argv is None else argv)
    try:
        run_worker(cfg, out_dir)
    except Exception as err:  # report it where the launcher's caller looks, then fail the rank
        rank = os.environ.get("RANK_ID", "?")
        message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        _atomic_write_json(os.path.join(out_dir, f"rank_{rank}.error.json"), {"rank": rank, "error": message})
        print(f"moe_lab.parallel.worker rank {rank}: {message}", file=sys.stderr, flush=True)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
