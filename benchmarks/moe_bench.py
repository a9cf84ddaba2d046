"""MoE dispatch benchmark: every path of ``MoELayer`` against a dense FFN with the same active FLOPs.

    python -m benchmarks.moe_bench            # full run (~10-30 min on 2 cores), writes benchmarks/results.json,
                                              # benchmarks/RESULTS.md and benchmarks/*.png
    python -m benchmarks.moe_bench --quick    # tiny sizes, checks that everything runs (used by a test)
    python -m benchmarks.moe_bench --out DIR  # write somewhere else
    python -m benchmarks.moe_bench --replot   # RESULTS.md and plots again from results.json (no measuring)

What is measured (notebook 03 reads the results; the README quotes them):

* MoE forward and forward+backward at 4096 tokens, hidden 512, ffn 2048, 8 experts, top-2, fp32, CPU:
  every dispatch path in PyNative and, where it compiles, under ``mindspore.jit``; the per-token loop at
  256 and 1024 tokens (forward; forward+backward at 256 only: it takes minutes).
* The baseline: a dense FFN 512 -> 4096 -> 512 with the same activation, in the same run, PyNative and jit.
* FLOP equality. Experts and baseline use ReLU (the article's FFN): an expert does 2 matmuls of
  ``2*H*F`` FLOPs per row, a token visits K=2 experts, so MoE = ``2 * 2 * (2*H*F)`` = dense FFN with
  ``F_dense = K*F = 4096``: ``2 * (2*H*F_dense)``. Exactly equal (SwiGLU on both sides would be equal too;
  ReLU is the cheaper choice and the one the article uses). The router adds ``2*H*E`` per token (0.1%).
* Each timing is the median of >= 5 runs after warm-up (the first call, which compiles, is reported
  apart); ratios are to the dense FFN under jit measured in the same run; tokens/s = tokens / median.
* Peak memory: every case runs in its own subprocess; we report the peak resident set size (RSS,
  ``resource.getrusage``) of that process and its increase over the RSS after the model and inputs
  were built (that increase is what the computation allocated, including MindSpore's memory pool).
* Scaling: time vs tokens (256..16384) and vs experts (8..64; top-2 and ffn fixed, so the active
  FLOPs per token do not change, only the parameters grow).
* Where the time goes: MindSpore's CPU profiler, per op type, inside the compiled graphs of the fastest
  MoE path and of the dense FFN, forward and forward+backward.

Everything is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent

FULL = {
    "tokens": 4096, "hidden": 512, "ffn": 2048, "experts": 8, "top_k": 2, "activation": "relu",
    "capacity_factor": 1.25, "repeats": 9, "loop_repeats": 5, "scale_repeats": 5, "warmup": 2,
    "loop_tokens": [256, 1024], "loop_grad_tokens": [256],
    "scale_tokens": [256, 512, 1024, 2048, 4096, 8192, 16384], "scale_experts": [8, 16, 32, 64],
    "scale_token_paths": [["ffn", "jit"], ["ffn_nn", "jit"], ["dropless", "jit"], ["capacity", "jit"],
                          ["dense", "jit"], ["sorted", "pynative"]],
    "scale_expert_paths": [["dropless", "jit"], ["capacity", "jit"], ["dense", "jit"], ["sorted", "pynative"]],
    "breakdown_passes": ["forward", "forward+backward"],
}
QUICK = {
    "tokens": 64, "hidden": 16, "ffn": 32, "experts": 4, "top_k": 2, "activation": "relu",
    "capacity_factor": 1.25, "repeats": 5, "loop_repeats": 5, "scale_repeats": 5, "warmup": 1,
    "loop_tokens": [4, 8], "loop_grad_tokens": [4],
    "scale_tokens": [32, 64], "scale_experts": [4, 8],
    "scale_token_paths": [["ffn", "jit"], ["sorted", "pynative"]],
    "scale_expert_paths": [["sorted", "pynative"]],
    "breakdown_passes": ["forward"],
}

# path -> (label, what it is)
PATHS = {
    "ffn": ("dense FFN (ops.matmul)", "one FFN hidden -> top_k*ffn -> hidden, same active FLOPs; the experts' code"),
    "ffn_nn": ("dense FFN (nn.Dense)", "the same FFN written with two nn.Dense(has_bias=False) layers"),
    "loop": ("loop", "per-token, per-slot Python loop (the article's way)"),
    "dense": ("dense (all experts)", "every expert on every token, then mask: E/K times the FLOPs"),
    "sorted": ("sorted", "sort slots by expert, one matmul per expert; counts read on the host"),
    "capacity": ("capacity (cf {cf})", "static [E, C, H] buffer, C from the capacity factor"),
    "dropless": ("capacity (dropless, padded)", "static [E, C, H] buffer, C = max load rounded up"),
    "floor": ("expert matmuls only", "the experts' batched matmuls alone, on a perfectly balanced buffer that is "
              "already gathered: no router, no dispatch, no padding; no MoE path can cost less"),
}
JIT_PATHS = ("ffn", "ffn_nn", "dense", "capacity", "dropless")  # compile with jit(capture_mode="ast")
BYTECODE_PATHS = ("sorted",)  # host syncs: only bytecode capture (with graph breaks) can take them
MOE_PATHS = ("loop", "dense", "sorted", "capacity", "dropless")
FLOOR_PATH = "floor"  # not a MoE layer: the lower bound of any MoE path on these kernels
FFN_PATHS = ("ffn", "ffn_nn")


def _dense_ffn_class():
    from mindspore import nn, ops

    class DenseFFN(nn.Cell):
        """The baseline written the usual MindSpore way: ``nn.Dense`` (MatMul with ``transpose_b``) layers."""

        def __init__(self, expert):
            super().__init__()
            hidden, ffn = expert.w_up.shape
            self.up = nn.Dense(hidden, ffn, has_bias=False)
            self.down = nn.Dense(ffn, hidden, has_bias=False)
            # same weights as the ops.matmul baseline (nn.Dense stores [out, in])
            self.up.weight.set_data(expert.w_up.T.copy())
            self.down.weight.set_data(expert.w_down.T.copy())

        def construct(self, x):
            return self.down(ops.relu(self.up(x)))

    return DenseFFN


def DenseFFN(expert):  # noqa: N802 (a class factory: MindSpore is imported lazily, in the worker)
    """A dense FFN of ``nn.Dense`` layers with ``expert``'s weights (ReLU only, like the benchmark)."""
    if expert.activation != "relu":
        raise ValueError(f"DenseFFN is the ReLU baseline, got activation={expert.activation!r}")
    return _dense_ffn_class()(expert)


# ---------------------------------------------------------------------------------------------
# worker side: build one case, time it (runs in a subprocess)

def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _sync(result) -> None:
    """Wait for every output: ``asnumpy`` blocks until the tensor is computed (no copy on CPU)."""
    if isinstance(result, (tuple, list)):
        for r in result:
            _sync(r)
    else:
        result.asnumpy()


def _error_text(err: Exception) -> str:
    """``Type: first line of the message`` (MindSpore errors carry pages of C++ context after it)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _time_once(fn, x) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(x)
    _sync(out)
    return time.perf_counter() - t0, out


def _timed(fn, x, repeats: int, warmup: int, others: dict | None = None) -> tuple[dict, object]:
    """First call (compiles), ``warmup - 1`` more untimed calls, then ``repeats`` timed calls.

    With ``others`` (name -> (fn, x), already warm), the functions take turns, two calls each per
    round: ``A A B B C C, A A B B C C, ...``. The second call of a pair is the **warm** time (caches
    hold this function's weights, as in back-to-back calls): ``runs_s``. The first follows another
    layer's call, like a layer inside a network: the **cold** time, ``runs_cold_s``. Because the
    turns are seconds apart, a change of machine load hits the case and its baselines alike.
    """
    first, out = _time_once(fn, x)
    for _ in range(max(0, warmup - 1)):
        _sync(fn(x))
    if not others:
        runs = []
        for _ in range(repeats):
            elapsed, out = _time_once(fn, x)
            runs.append(elapsed)
        return {"first_call_s": first, "runs_s": runs}, out
    turns = {"case": (fn, x), **others}
    warm = {name: [] for name in turns}
    cold = {name: [] for name in turns}
    for _ in range(repeats):
        for name, (f, fx) in turns.items():
            cold[name].append(_time_once(f, fx)[0])
            elapsed, result = _time_once(f, fx)
            warm[name].append(elapsed)
            if name == "case":
                out = result
    timing = {"first_call_s": first, "runs_s": warm.pop("case"), "runs_cold_s": cold.pop("case"),
              "baseline_runs_s": warm, "baseline_runs_cold_s": cold}
    return timing, out


# MindSpore 2.10 keys some compiled-graph caches by object identity: building and freeing many models in one
# process made later, unrelated cases fail with graph errors (twice in a full run). Built models stay alive.
_KEEP_ALIVE: list = []


def build_case(case: dict, cfg: dict):
    """The function to time for one case, and the model it runs. Returns ``(fn, x, info)``."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, ops

    import moe_lab
    from moe_lab.core.compiled import CompiledMoE, mean_square
    from moe_lab.core.experts import Expert
    from moe_lab.core.layer import MoELayer

    moe_lab.setup(seed=0)
    tokens, experts = case["tokens"], case.get("experts", cfg["experts"])
    rng = np.random.default_rng(123)
    x = Tensor(rng.standard_normal((tokens, cfg["hidden"])).astype(np.float32))
    path, mode, backward = case["path"], case["mode"], case["pass"] == "forward+backward"
    info: dict = {}
    if path == FLOOR_PATH:
        from moe_lab.core.static import experts_batched

        model = MoELayer(cfg["hidden"], cfg["ffn"], experts, cfg["top_k"], activation=cfg["activation"], seed=0)
        rows, rest = divmod(tokens * cfg["top_k"], experts)
        if rest:
            raise ValueError(f"the floor needs tokens*top_k divisible by experts; got {tokens}*{cfg['top_k']} "
                             f"and {experts}")
        # every token K times, E blocks of exactly N*K/E rows: what a perfectly balanced router would gather
        x = ops.tile(x, (cfg["top_k"], 1)).reshape(experts, rows, cfg["hidden"])
        ex = model.experts

        def forward(x):
            return experts_batched(x, ex.w_gate, ex.w_up, ex.w_down)
    elif path in FFN_PATHS:
        model = Expert(cfg["hidden"], cfg["top_k"] * cfg["ffn"], cfg["activation"], seed=1)
        if path == "ffn_nn":
            model = DenseFFN(model)

        def forward(x):
            return model(x)
    else:
        cf = cfg["capacity_factor"] if path == "capacity" else None
        model = MoELayer(cfg["hidden"], cfg["ffn"], experts, cfg["top_k"], activation=cfg["activation"],
                         capacity_factor=cf, seed=0)
        dispatch = "capacity" if path == "dropless" else path
        routing = model.route(x)
        info["dropped_slots"] = routing.dropped()
        info["max_load"] = int(routing.load().max())

        def forward(x):
            return model(x, dispatch=dispatch)
    params = model.trainable_params() if path != FLOOR_PATH else model.experts.trainable_params()

    def loss(x):
        return mean_square(forward(x))

    grad = ms.value_and_grad(loss, grad_position=None, weights=params)

    def step(x):
        return grad(x)

    if mode == "pynative":
        fn = step if backward else forward
    elif mode == "jit" and path in ("dense", "capacity", "dropless"):
        compiled = CompiledMoE(model, "dense" if path == "dense" else "capacity")
        fn = compiled.value_and_grad if backward else compiled
        info["compiled"] = compiled
    elif mode == "jit" and path in FFN_PATHS + ("loop", "sorted", FLOOR_PATH):
        fn = ms.jit(step) if backward else ms.jit(forward)
    elif mode == "jit-bytecode":
        fn = ms.jit(step if backward else forward, capture_mode="bytecode")
    else:
        raise ValueError(f"no {mode} variant for path {path!r}")
    _KEEP_ALIVE.append((fn, model))
    return fn, x, info, model


def _baselines(case: dict, cfg: dict) -> dict:
    """The two dense FFNs under jit for this case's pass, built and warmed, to be timed alongside it."""
    if case["tokens"] != cfg["tokens"] or not cfg.get("paired", True):
        return {}
    out = {}
    for path in FFN_PATHS:
        fn, x, _, _ = build_case({"path": path, "mode": "jit", "pass": case["pass"], "tokens": case["tokens"]}, cfg)
        for _ in range(cfg["warmup"]):
            _sync(fn(x))
        out[path] = (fn, x)
    return out


def run_case(case: dict, cfg: dict) -> dict:
    """Build and time one case; failures become a status, never a crash of the whole benchmark.

    Order: build, first call + warm-up, peak RSS (the case alone), then the baselines are built and
    the timed calls alternate case / baselines.
    """
    result = dict(case)
    try:
        fn, x, info, model = build_case(case, cfg)
        rss_before = _rss_mb()
        # the loop's first call is its warm-up (it compiles nothing, and one call takes up to a minute)
        warmup = 1 if case["path"] == "loop" else cfg["warmup"]
        first, _ = _time_once(fn, x)
        for _ in range(warmup - 1):
            _sync(fn(x))
        result["rss_before_mb"] = rss_before
        result["peak_rss_mb"] = _peak_rss_mb()
        repeats = cfg["loop_repeats"] if case["path"] == "loop" else cfg["repeats"]
        timing, out = _timed(fn, x, repeats, 1, others=_baselines(case, cfg))
        timing["first_call_s"] = first
        result.update(timing)
        compiled = info.pop("compiled", None)
        if compiled is not None and compiled.last_capacity is not None:
            info["capacity"] = compiled.last_capacity
        if case["path"] in MOE_PATHS and case["pass"] == "forward":
            # every path must compute the same thing: check against another path on the same layer
            other = "dense" if case["path"] == "sorted" else "sorted"
            info["checked_against"] = other
            info["max_abs_err"] = float(abs(out.asnumpy() - model(x, dispatch=other).asnumpy()).max())
        result.update(info)
        result["status"] = "ok"
    except Exception as err:  # reported in results.json and RESULTS.md, the other cases still run
        result["status"] = "not compiled" if case.get("attempt") else "failed"
        result["error"] = _error_text(err)
    return result


def run_interleaved(cases: list[dict], cfg: dict) -> list[dict]:
    """Build and warm every case, then time them round-robin, call after call.

    Used for the scaling curves: the points of one x value (all paths at one token count) are then
    measured under the same machine load, so their ratios mean something even on a shared machine.
    """
    out, ready = [], []
    for case in cases:
        result = dict(case, interleaved=True)
        try:
            fn, x, _, _ = build_case(case, cfg)
            result["first_call_s"], _ = _time_once(fn, x)
            for _ in range(cfg["warmup"] - 1):
                _sync(fn(x))
            result["runs_s"] = []
            ready.append((result, fn, x))
        except Exception as err:
            result["status"] = "failed"
            result["error"] = _error_text(err)
        out.append(result)
    for _ in range(cfg["scale_repeats"]):
        for result, fn, x in ready:  # a cold call after the other paths, then the timed warm call
            result.setdefault("runs_cold_s", []).append(_time_once(fn, x)[0])
            result["runs_s"].append(_time_once(fn, x)[0])
    for result, _, _ in ready:
        result["status"] = "ok"
    return out


def worker(payload: dict) -> dict:
    """Run cases one after the other, then interleaved groups, in this process; returns their results."""
    cfg = payload["cfg"]
    out = []
    for case in payload.get("cases", []):
        if case.get("kind") == "breakdown":
            out.append(run_breakdown(case, cfg))
        else:
            out.append(run_case(case, cfg))
    groups = [run_interleaved(group, cfg) for group in payload.get("interleaved", [])]
    return {"results": out, "interleaved": groups}


# ---------------------------------------------------------------------------------------------
# per-op breakdown with MindSpore's CPU profiler

def _profile_op_types(fn, x, steps: int) -> dict[str, float]:
    """Mean milliseconds per step spent in each op type while ``fn(x)`` runs (MindSpore CPU profiler)."""
    import csv

    from mindspore.profiler import ProfilerActivity, profile, tensorboard_trace_handler

    with tempfile.TemporaryDirectory() as tmp:
        with profile(activities=[ProfilerActivity.CPU], on_trace_ready=tensorboard_trace_handler(tmp)) as prof:
            for _ in range(steps):
                _sync(fn(x))
                prof.step()
        found = sorted(Path(tmp).rglob("cpu_op_type_info_*.csv"))
        if not found:
            raise RuntimeError("the profiler wrote no cpu_op_type_info file")
        times: dict[str, float] = {}
        with open(found[0], newline="") as f:
            for row in csv.DictReader(f):
                times[row["op_type"]] = times.get(row["op_type"], 0.0) + float(row["total_compute_time"]) / steps
    return times


def run_breakdown(case: dict, cfg: dict) -> dict:
    """Per-op-type time of one compiled case (forward or forward+backward), plus its wall time."""
    result = dict(case)
    try:
        fn, x, _, _ = build_case(case, cfg)
        timing, _ = _timed(fn, x, cfg["repeats"], cfg["warmup"])
        ops_ms = _profile_op_types(fn, x, steps=cfg["repeats"])
        result.update(timing)
        result["op_ms"] = dict(sorted(ops_ms.items(), key=lambda kv: -kv[1]))
        result["status"] = "ok"
    except Exception as err:
        result["status"] = "failed"
        result["error"] = _error_text(err)
    return result


# ---------------------------------------------------------------------------------------------
# driver side: plan the cases, run each in a subprocess, summarise, write

def plan_cases(cfg: dict) -> dict[str, list[dict]]:
    """Every case of the benchmark, grouped by section (the breakdown is planned after the main cases)."""
    tokens = cfg["tokens"]
    main = []
    for passname in ("forward", "forward+backward"):
        for path in ("ffn", "ffn_nn", "dense", "sorted", "capacity", "dropless"):
            main.append({"path": path, "mode": "pynative", "pass": passname, "tokens": tokens})
            if path in JIT_PATHS:
                main.append({"path": path, "mode": "jit", "pass": passname, "tokens": tokens})
            if path in BYTECODE_PATHS:
                main.append({"path": path, "mode": "jit-bytecode", "pass": passname, "tokens": tokens})
        main.append({"path": FLOOR_PATH, "mode": "jit", "pass": passname, "tokens": tokens})
    for t in cfg["loop_tokens"]:
        main.append({"path": "loop", "mode": "pynative", "pass": "forward", "tokens": t})
    for t in cfg["loop_grad_tokens"]:
        main.append({"path": "loop", "mode": "pynative", "pass": "forward+backward", "tokens": t})
    # the two host-synced paths under jit(capture_mode="ast"): recorded with the compiler's refusal
    main.append({"path": "sorted", "mode": "jit", "pass": "forward", "tokens": tokens, "attempt": True})
    main.append({"path": "loop", "mode": "jit", "pass": "forward", "tokens": min(cfg["loop_tokens"]),
                 "attempt": True})
    scale_tokens = [
        [{"path": path, "mode": mode, "pass": "forward", "tokens": t} for t in cfg["scale_tokens"]]
        for path, mode in cfg["scale_token_paths"]
    ]
    scale_experts = [
        [{"path": path, "mode": mode, "pass": "forward", "tokens": tokens, "experts": e}
         for e in cfg["scale_experts"]]
        for path, mode in cfg["scale_expert_paths"]
    ]
    return {"main": main, "scale_tokens": scale_tokens, "scale_experts": scale_experts}


def _spawn(cases: list[dict], cfg: dict, timeout: float, interleaved: list[list[dict]] | None = None) -> dict:
    """Run ``cases`` (then the ``interleaved`` groups) in one fresh Python process.

    A fresh process per main case means its peak RSS belongs to it alone. Failures of the process
    become failed results (with the last line of its stderr), never an exception here.
    """
    interleaved = interleaved or []
    # MS_DEV_HOST_BLOCKING_RUN=1 (what moe_lab.env sets): without it MindSpore's host thread busy-waits for each
    # launched graph and, on 2 cores, takes the core the kernels need (benchmarks/host_wait.py measures it)
    env = dict(os.environ, GLOG_v="3", MS_DEV_HOST_BLOCKING_RUN="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    payload = json.dumps({"cfg": cfg, "cases": cases, "interleaved": interleaved})

    def failed(error):
        return {"results": [dict(c, status="failed", error=error) for c in cases],
                "interleaved": [[dict(c, status="failed", error=error) for c in g] for g in interleaved]}

    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.moe_bench", "--worker", payload], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return failed(f"timed out after {timeout:.0f} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        return failed(f"worker exit {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def machine_info() -> dict:
    """CPU model, cores, versions and date: what a reader needs to compare numbers."""
    import mindspore as ms
    import numpy as np

    model, mhz, flags = None, None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(value)
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except (OSError, ValueError):  # no /proc/cpuinfo (macOS): platform.processor() names the CPU below
        model, mhz, flags = None, None, set()
    # the widest float32 FMA vector unit: with the clock, what a FLOP/s figure is compared with
    simd = next((name for name in ("avx512f", "avx2", "neon", "asimd") if name in flags), None)
    return {
        "cpu": model or platform.processor() or "unknown", "cores": os.cpu_count(), "cpu_mhz": mhz, "simd": simd,
        "platform": platform.platform(), "python": platform.python_version(),
        "mindspore": ms.__version__, "numpy": np.__version__, "host_blocking_run": "1",
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def forward_matmul_flop(cfg: dict) -> float:
    """FLOPs of the forward matmuls at the main size, MoE or dense FFN alike: ``2 * tokens * 2*H*(K*F)``
    (two matmuls; the router's ``2*H*E`` per token is left out)."""
    return 2.0 * cfg["tokens"] * 2.0 * cfg["hidden"] * cfg["top_k"] * cfg["ffn"]


def summarise(results: dict) -> dict:
    """Medians, ratios to the baseline of the same pass, tokens/s, and the speed target.

    The baseline is the faster of the two dense FFNs under jit (``bench_report.baseline``): the
    comparison is against the best dense FFN, not the one that suits the MoE.
    """
    import numpy as np

    from moe_lab import bench_report

    cases = results["cases"]
    for c in cases:
        if c.get("status") == "ok":
            c["median_s"] = float(np.median(c["runs_s"]))
            c["tokens_per_s"] = c["tokens"] / c["median_s"]
    results["baseline"] = {}
    for p in ("forward", "forward+backward"):
        found = bench_report.baseline(results, p)
        if found:
            results["baseline"][p] = {"path": found[0], "median_s": found[1]}
    for c in cases:
        ratio = bench_report.case_ratio(results, c)
        if ratio is not None:
            c["ratio_to_baseline"] = ratio
        cold = bench_report.case_ratio(results, c, cold=True)
        if cold is not None:
            c["ratio_cold_to_baseline"] = cold
    target = {}
    for p in ("forward", "forward+backward"):
        moe = [c for c in cases if c["path"] in MOE_PATHS and c["pass"] == p and c.get("status") == "ok"
               and c.get("ratio_to_baseline") is not None]
        if moe:
            best = min(moe, key=lambda c: c["ratio_to_baseline"])
            paired = best.get("baseline_runs_s")
            base_path = (min(paired, key=lambda k: np.median(paired[k])) if paired
                         else results["baseline"][p]["path"])
            target[p] = {"fastest": f"{best['path']} {best['mode']}", "median_s": best["median_s"],
                         "baseline": base_path, "baseline_s": best["median_s"] / best["ratio_to_baseline"],
                         "ratio": best["ratio_to_baseline"], "met": best["ratio_to_baseline"] <= 1.0,
                         "paired": "baseline_runs_s" in best, "ratio_cold": best.get("ratio_cold_to_baseline")}
            floor = next((c for c in cases if c["path"] == FLOOR_PATH and c["pass"] == p
                          and c.get("ratio_to_baseline") is not None), None)
            if floor:  # the experts' matmuls alone: how close to the baseline any MoE path could get
                target[p].update(floor_s=floor["median_s"], floor_ratio=floor["ratio_to_baseline"],
                                 floor_ratio_cold=floor.get("ratio_cold_to_baseline"))
            if p == "forward":
                flop = forward_matmul_flop(results["config"])
                target[p]["gflop_per_s"] = {"baseline": flop / target[p]["baseline_s"] / 1e9,
                                            "fastest": flop / best["median_s"] / 1e9}
                if floor:
                    target[p]["gflop_per_s"]["floor"] = flop / floor["median_s"] / 1e9
    for group in results.get("scale_tokens", []):
        for c in group:
            if c.get("status") == "ok":
                c["median_s"] = float(np.median(c["runs_s"]))
    for group in results.get("scale_experts", []):
        for c in group:
            if c.get("status") == "ok":
                c["median_s"] = float(np.median(c["runs_s"]))
    loop_t = max(results["config"]["loop_tokens"])
    loop = next((c for c in cases if c["path"] == "loop" and c["pass"] == "forward" and c["tokens"] == loop_t
                 and c.get("status") == "ok"), None)
    at_t = [c for g in results.get("scale_tokens", []) for c in g
            if c["path"] in MOE_PATHS and c["tokens"] == loop_t and c.get("status") == "ok"]
    if loop and at_t:
        best = min(at_t, key=lambda c: c["median_s"])
        target["loop"] = {"tokens": loop_t, "loop_s": loop["median_s"], "fastest": f"{best['path']} {best['mode']}",
                          "fastest_s": best["median_s"], "speedup": loop["median_s"] / best["median_s"],
                          "met": loop["median_s"] / best["median_s"] >= 100}
    results["speed_target"] = target
    return results


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_outputs(results: dict, out: Path) -> list[Path]:
    """results.json, RESULTS.md and the PNG plots, each written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moe_lab import bench_report

    written = []

    def dump_json(tmp):
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")

    _write_atomic(out / "results.json", dump_json)
    written.append(out / "results.json")
    for name, plot in (("paths.png", bench_report.plot_paths), ("scaling_tokens.png", bench_report.plot_scaling_tokens),
                       ("scaling_experts.png", bench_report.plot_scaling_experts),
                       ("breakdown.png", bench_report.plot_breakdown)):
        fig = plot(results)
        _write_atomic(out / name, lambda tmp, fig=fig: fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png"))
        plt.close(fig)
        written.append(out / name)

    def dump_md(tmp):
        with open(tmp, "w") as f:
            f.write(bench_report.results_markdown(results))

    _write_atomic(out / "RESULTS.md", dump_md)
    written.append(out / "RESULTS.md")
    return written


def fastest_compiled(cases: list[dict], passname: str, tokens: int) -> str | None:
    """The MoE path whose jit-compiled case of this pass was fastest (the one the breakdown profiles)."""
    import numpy as np

    ok = [c for c in cases if c["path"] in MOE_PATHS and c["mode"] == "jit" and c["pass"] == passname
          and c["tokens"] == tokens and c.get("status") == "ok"]
    return min(ok, key=lambda c: np.median(c["runs_s"]))["path"] if ok else None


def run(cfg: dict, out: Path, quick: bool, log=print) -> dict:
    """Plan, run every case in subprocesses, summarise and write. Returns the results dict.

    Full mode: one subprocess per main case (so its peak RSS is its own), one per scaling line.
    Quick mode: main cases and scaling share one subprocess (memory is then not per case).
    The breakdown profiles, per pass, the fastest compiled MoE path of the main cases and the baseline.
    """
    from moe_lab import bench_report

    plan = plan_cases(cfg)
    results = {"quick": quick, "config": cfg, "machine": machine_info(), "load_avg_1min": {"start": _load()}}
    started = time.perf_counter()
    loads = [_load()]

    def spawn(cases, timeout=3600, interleaved=None):
        res = _spawn(cases, cfg, timeout, interleaved)
        loads.append(_load())
        for r in res["results"] + [c for g in res["interleaved"] for c in g]:
            log(_line(r))
        return res

    def by_x(groups):
        """Path-major groups (one per path, over x values) -> one job per x value (all paths)."""
        return [list(col) for col in zip(*groups, strict=True)] if groups else []

    def by_path(jobs):
        return [list(row) for row in zip(*jobs, strict=True)] if jobs else []

    if quick:  # one process for everything: peak memory is then not per case
        res = spawn(plan["main"], interleaved=by_x(plan["scale_tokens"]) + by_x(plan["scale_experts"]))
        results["cases"] = res["results"]
        n_tok = len(by_x(plan["scale_tokens"]))
        results["scale_tokens"] = by_path(res["interleaved"][:n_tok])
        results["scale_experts"] = by_path(res["interleaved"][n_tok:])
        results["memory_per_case"] = False
    else:
        results["cases"] = [spawn([case])["results"][0] for case in plan["main"]]
        for key in ("scale_tokens", "scale_experts"):
            results[key] = by_path([spawn([], interleaved=[job])["interleaved"][0] for job in by_x(plan[key])])
        results["memory_per_case"] = True
    breakdown = []
    for passname in cfg["breakdown_passes"]:
        best = fastest_compiled(results["cases"], passname, cfg["tokens"])
        base = bench_report.baseline(results, passname)
        for path in ([best] if best else []) + ([base[0]] if base else []):
            breakdown.append({"kind": "breakdown", "path": path, "mode": "jit", "pass": passname,
                              "tokens": cfg["tokens"]})
    results["breakdown"] = (spawn(breakdown, timeout=1800)["results"] if quick
                            else [spawn([b], timeout=1800)["results"][0] for b in breakdown])
    loads.append(_load())
    results["load_avg_1min"].update({"end": loads[-1], "max": max(loads), "mean": round(sum(loads) / len(loads), 2)})
    results["wall_s"] = round(time.perf_counter() - started, 1)
    summarise(results)
    write_outputs(results, out)
    return results


def _line(r: dict) -> str:
    import numpy as np

    name = f"{r['path']:9s} {r['mode']:12s} {r['pass']:16s} T={r['tokens']:<6d} E={r.get('experts', '-')}"
    if r.get("status") != "ok":
        return f"{name} FAILED {r.get('error', '')}"
    return f"{name} median {np.median(r['runs_s']) * 1e3:10.1f} ms  (first call {r['first_call_s']:.2f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.moe_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one process: checks that the script runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: benchmarks/)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (>= 5)")
    parser.add_argument("--replot", action="store_true",
                        help="rewrite RESULTS.md and the plots from OUT/results.json, measuring nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.replot:
        from moe_lab import bench_report

        try:
            results = bench_report.load_results(args.out / "results.json")
        except (FileNotFoundError, ValueError) as err:
            print(f"moe_bench: {err}", file=sys.stderr)
            return 2
        write_outputs(summarise(results), args.out)
        print(f"rewrote {args.out / 'RESULTS.md'} and the plots from {args.out / 'results.json'}")
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        if args.repeats < 5:
            print(f"moe_bench: --repeats must be >= 5 (a median of fewer runs is noise), got {args.repeats}",
                  file=sys.stderr)
            return 2
        cfg["repeats"] = cfg["loop_repeats"] = cfg["scale_repeats"] = args.repeats
    run(cfg, args.out, args.quick)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
