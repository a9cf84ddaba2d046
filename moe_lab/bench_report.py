"""Reading the dispatch benchmark's results: a table and pure plot functions (results dict -> Figure).

Introduced in notebook 03 (section "How fast is each path?"). ``benchmarks/moe_bench.py`` writes
``benchmarks/results.json``; the notebook and ``benchmarks/RESULTS.md`` show it through these
functions, so the notebook never runs the benchmark itself.

    results = load_results()                 # benchmarks/results.json of this repository
    rows = results_table(results)            # one dict per (path, mode): medians, ratios, tokens/s, memory
    lines = summary_lines(results)           # the few numbers notebook 03 discusses, as plain sentences
    fig = plot_paths(results)                # forward and forward+backward time of every path
    fig = plot_scaling_tokens(results)       # time vs tokens
    fig = plot_scaling_experts(results)      # time vs experts at equal active FLOPs
    fig = plot_breakdown(results)            # where the time goes, per op type
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from moe_lab.i18n import N_, _
from moe_lab.textfmt import ljust
from moe_lab.textfmt import width as display_width

RESULTS_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "results.json"
PASSES = ("forward", "forward+backward")
PASS_NAMES = {"forward": N_("forward"), "forward+backward": N_("forward+backward")}
# What a learner reads (notebook 03: summary_lines, plot_paths) is translated; RESULTS.md stays in English.
LABELS = {
    "ffn": N_("dense FFN (ops.matmul)"),
    "ffn_nn": N_("dense FFN (nn.Dense)"),
    "loop": "loop",
    "dense": N_("dense (all experts)"),
    "sorted": "sorted",
    "capacity": N_("capacity (cf {cf})"),
    "dropless": N_("capacity (dropless, padded)"),
    "floor": N_("expert matmuls only"),
}
MODES = {"pynative": "PyNative", "jit": "jit", "jit-bytecode": "jit (bytecode)"}
FFN_PATHS = ("ffn", "ffn_nn")


def load_results(path: str | Path | None = None) -> dict:
    """The benchmark's results dict (default: ``benchmarks/results.json`` next to the package). Notebook 03."""
    path = RESULTS_PATH if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no benchmark results at {path}: run `make bench` (python -m benchmarks.moe_bench)")
    with open(path) as f:
        results = json.load(f)
    for key in ("config", "machine", "cases"):
        if key not in results:
            raise ValueError(f"{path} is not a moe_bench results file: key {key!r} is missing")
    return results


def path_label(results: dict, path: str, english: bool = False) -> str:
    """Human name of a dispatch path (the capacity path shows its capacity factor), in the package's language
    (``english=True``: in English, as ``RESULTS.md`` writes it). Notebook 03."""
    if path not in LABELS:
        raise ValueError(f"path must be one of {', '.join(map(repr, LABELS))}; got {path!r}")
    return (LABELS[path] if english else _(LABELS[path])).format(cf=f"{results['config']['capacity_factor']:g}")


def _median(case: dict) -> float | None:
    if case.get("status") != "ok":
        return None
    return float(case.get("median_s", np.median(case["runs_s"])))


def baseline(results: dict, passname: str) -> tuple[str, float] | None:
    """``(path, median seconds)`` of the faster dense FFN under jit for this pass, at the main size.

    Two dense FFNs are measured (``ops.matmul`` as the experts are written, and ``nn.Dense``); the
    ratios use the faster one, so the MoE is compared with the best dense FFN of the run.

    Introduced in notebook 03.
    """
    found = [(c["path"], _median(c)) for c in results["cases"]
             if c["path"] in FFN_PATHS and c["mode"] == "jit" and c["pass"] == passname
             and c["tokens"] == results["config"]["tokens"] and _median(c)]
    return min(found, key=lambda f: f[1]) if found else None


def case_ratio(results: dict, case: dict, cold: bool = False) -> float | None:
    """Time of ``case`` / time of the faster dense FFN (jit, same pass), or None if not comparable.

    Cases timed in turns with the baselines (``baseline_runs_s``, see ``benchmarks/moe_bench.py``) use
    those paired timings, which a change of machine load affects equally; ``cold=True`` compares the
    calls that followed another layer's call (caches holding someone else's weights). Other cases at
    the main size use the baseline cases of the run (warm only).

    Introduced in notebook 03.
    """
    med = _median(case)
    if med is None:
        return None
    paired = case.get("baseline_runs_cold_s" if cold else "baseline_runs_s")
    if cold:
        if not paired or not case.get("runs_cold_s"):
            return None
        med = float(np.median(case["runs_cold_s"]))
    if paired:
        return med / min(float(np.median(v)) for v in paired.values())
    base = baseline(results, case["pass"])
    if base and case["tokens"] == results["config"]["tokens"]:
        return med / base[1]
    return None


def results_table(results: dict) -> list[dict]:
    """One row per (path, mode, tokens) of the main cases, forward and forward+backward side by side.

    Keys: ``path, mode, tokens, forward_ms, forward_ratio, forward_ratio_cold, forward_tokens_per_s,
    backward_ms`` (forward+backward), ``backward_ratio, backward_ratio_cold, peak_rss_mb, extra_rss_mb,
    note``. Missing values are None.

    Introduced in notebook 03.
    """
    rows: dict[tuple, dict] = {}
    for c in results["cases"]:
        key = (c["path"], c["mode"], c["tokens"])
        row = rows.setdefault(key, {"path": path_label(results, c["path"], english=True),
                                    "mode": MODES.get(c["mode"], c["mode"]),
                                    "tokens": c["tokens"], "forward_ms": None, "forward_ratio": None,
                                    "forward_ratio_cold": None, "forward_tokens_per_s": None,
                                    "backward_ms": None, "backward_ratio": None, "backward_ratio_cold": None,
                                    "peak_rss_mb": None, "extra_rss_mb": None, "note": ""})
        med = _median(c)
        prefix = "forward" if c["pass"] == "forward" else "backward"
        if med is None:
            row["note"] = (row["note"] + f" {c.get('status', 'failed')} ({c['pass']}): {c.get('error', '')}").strip()
            continue
        row[f"{prefix}_ms"] = med * 1e3
        row[f"{prefix}_ratio"] = case_ratio(results, c)
        row[f"{prefix}_ratio_cold"] = case_ratio(results, c, cold=True)
        if c["pass"] == "forward":
            row["forward_tokens_per_s"] = c["tokens"] / med
            if results.get("memory_per_case", False):
                row["peak_rss_mb"] = c.get("peak_rss_mb")
                row["extra_rss_mb"] = c["peak_rss_mb"] - c["rss_before_mb"]
    return list(rows.values())


def _case(results: dict, path: str, mode: str, passname: str = "forward") -> dict | None:
    """The measured case of ``path`` / ``mode`` / pass at the main size, or None."""
    return next((c for c in results["cases"] if c["path"] == path and c["mode"] == mode and c["pass"] == passname
                 and c["tokens"] == results["config"]["tokens"] and _median(c) is not None), None)


def _path_and_mode(results: dict, path: str, mode: str) -> str:
    """``"capacity (cf 1.25), jit"``: a path and the mode it ran in (translated; the modes are names)."""
    return _("{path}, {mode}").format(path=path_label(results, path), mode=MODES.get(mode, mode))


def _fastest_label(results: dict, fastest: str) -> str:
    """``"capacity jit"`` (how ``speed_target`` names a case) -> ``"capacity (cf 1.25), jit"``."""
    path, mode = fastest.split(" ", 1)
    return _path_and_mode(results, path, mode)


def summary_lines(results: dict) -> list[str]:
    """The few numbers a reader of notebook 03 needs, as plain sentences (no methodology), in the package's
    language.

    The layer and machine; per pass, the fastest MoE path against the dense FFN of equal FLOPs (and,
    forward, the experts' matmuls alone); the all-experts path; the per-token loop; the padding of the
    dropless buffer. Lines whose data the results lack are left out. Introduced in notebook 03.
    """
    cfg, mach = results["config"], results["machine"]
    target = results.get("speed_target", {})
    lines = [_("layer: {tokens} tokens, hidden_size {hidden_size}, intermediate_size {intermediate_size}, "
               "{experts} experts, top-{top_k}, float32; {cpu}, {cores} cores, MindSpore {mindspore}").format(
        tokens=cfg["tokens"], hidden_size=cfg["hidden"], intermediate_size=cfg["ffn"], experts=cfg["experts"],
        top_k=cfg["top_k"], cpu=mach["cpu"], cores=mach["cores"], mindspore=mach["mindspore"])]
    heads = {p: _("{pass_name}:").format(pass_name=_(PASS_NAMES[p])) for p in PASSES}
    column = max(display_width(h) for h in heads.values())  # the pass names line up, whatever their language
    for p in PASSES:
        t = target.get(p)
        if not t:
            continue
        fields = dict(path=_fastest_label(results, t["fastest"]), ratio=f"{t['ratio']:.2f}")
        if p == "forward" and t.get("floor_ratio") is not None:
            text = _("fastest MoE path {path}: {ratio}x the dense FFN; the experts' matmuls alone: {floor}x").format(
                floor=f"{t['floor_ratio']:.2f}", **fields)
        else:
            text = _("fastest MoE path {path}: {ratio}x the dense FFN").format(**fields)
        lines.append(f"{ljust(heads[p], column)} {text}")
    dense = _case(results, "dense", "jit")
    if dense is not None and case_ratio(results, dense) is not None:
        lines.append(_("{path}, jit: {ratio}x the dense FFN, forward; it computes {flops}x the FLOPs").format(
            path=path_label(results, "dense"), ratio=f"{case_ratio(results, dense):.2f}",
            flops=f"{cfg['experts'] / cfg['top_k']:g}"))
    loop = target.get("loop")
    if loop:
        lines.append(_("loop at {tokens} tokens: {seconds} s, {speedup}x the time of {path} ({ms} ms)").format(
            tokens=loop["tokens"], seconds=f"{loop['loop_s']:.1f}", speedup=f"{loop['speedup']:.0f}",
            path=_fastest_label(results, loop["fastest"]), ms=f"{loop['fastest_s'] * 1e3:.1f}"))
    dropless = _case(results, "dropless", "jit")
    if dropless is not None and dropless.get("capacity") and dropless.get("max_load"):
        mean = cfg["tokens"] * cfg["top_k"] / cfg["experts"]
        padding = 100 * (cfg["experts"] * dropless["capacity"] / (cfg["tokens"] * cfg["top_k"]) - 1)
        lines.append(_("dropless buffer: busiest expert {max_load} slots (mean {mean}), rounded up to C = {capacity} "
                       "rows per expert: {padding}% of the rows are padding").format(
            max_load=dropless["max_load"], mean=f"{mean:g}", capacity=dropless["capacity"], padding=f"{padding:.1f}"))
    return lines


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def results_markdown(results: dict) -> str:
    """The whole ``RESULTS.md``: machine, configuration, table, the dense-FFN comparison, scaling, breakdown.
    Notebook 03."""
    cfg, mach = results["config"], results["machine"]
    load = results.get("load_avg_1min", {})
    lines = [
        "# MoE dispatch benchmark" + (" (QUICK MODE: tiny sizes, not a measurement)" if results.get("quick") else ""),
        "",
        "Written by `python -m benchmarks.moe_bench` (`make bench`); read by notebook 03. Do not edit by hand.",
        "",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores; {mach['platform']}",
        f"- Software: MindSpore {mach['mindspore']}, NumPy {mach['numpy']}, Python {mach['python']}"
        + ("; `MS_DEV_HOST_BLOCKING_RUN=1` (no host busy-wait, as `moe_lab.env` sets)"
           if mach.get("host_blocking_run") == "1" else ""),
        f"- Date: {mach['date']}; run took {results.get('wall_s', 0):.0f} s",
        f"- Load average (1 min) during the run: start {load.get('start')}, mean {load.get('mean')}, "
        f"max {load.get('max')} on {mach['cores']} cores"
        + (" (the machine was shared: timings are noisy)" if (load.get("max") or 0) > 0.5 * mach["cores"] else ""),
        f"- Layer: {cfg['tokens']} tokens, hidden {cfg['hidden']}, ffn {cfg['ffn']}, {cfg['experts']} experts, "
        f"top-{cfg['top_k']}, {cfg['activation']} experts, float32, CPU",
        f"- Baseline: dense FFN {cfg['hidden']} -> {cfg['top_k'] * cfg['ffn']} -> {cfg['hidden']}, "
        f"{cfg['activation']}: exactly the MoE's active matmul FLOPs "
        f"(2 x {cfg['top_k']} x 2·H·F = 2 x 2·H·(K·F)); the router adds 2·H·E per token",
        f"- Each time is the median of {cfg['repeats']} warm calls after warm-up (the loop: "
        f"{cfg.get('loop_repeats', cfg['repeats'])}; scaling points: {cfg.get('scale_repeats', cfg['repeats'])}). "
        "*ratio* = time / the faster of "
        "the two dense FFNs under jit (same pass); the case and both FFNs take turns in one process, two calls "
        "each per turn, so a change of machine load hits them alike. *ratio* compares the second call of each "
        "turn (warm: its weights in cache, as in back-to-back calls); *cold* compares the first (right after "
        "the other layers ran, as inside a network).",
        "- Memory: peak RSS of the case's own process (measured before the baselines are built), and its "
        "increase over the RSS after building the model and inputs"
        + ("" if results.get("memory_per_case") else " (not per case here: quick mode shares one process)"),
        "",
        "## Every path",
        "",
        "| path | mode | tokens | forward ms | ratio | cold | tokens/s | fwd+bwd ms | ratio | cold | peak RSS MB "
        "| +MB | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results_table(results):
        lines.append(
            f"| {r['path']} | {r['mode']} | {r['tokens']} | {_fmt(r['forward_ms'], '.1f')} | "
            f"{_fmt(r['forward_ratio'], '.2f')} | {_fmt(r['forward_ratio_cold'], '.2f')} | "
            f"{_fmt(r['forward_tokens_per_s'], ',.0f')} | "
            f"{_fmt(r['backward_ms'], '.1f')} | {_fmt(r['backward_ratio'], '.2f')} | "
            f"{_fmt(r['backward_ratio_cold'], '.2f')} | "
            f"{_fmt(r['peak_rss_mb'], '.0f')} | {_fmt(r['extra_rss_mb'], '.0f')} | {r['note']} |")
    lines += ["", "## Against the dense FFN", "",
              "A ratio below 1.0 means the MoE path is faster than a dense FFN with the same active FLOPs.", ""]
    target = results.get("speed_target", {})
    for p in PASSES:
        t = target.get(p)
        if t:
            lines.append(f"- {p}: fastest MoE path `{t['fastest']}` {t['median_s'] * 1e3:.1f} ms vs "
                         f"{path_label(results, t['baseline'], english=True)} jit "
                         f"{t['baseline_s'] * 1e3:.1f} ms: ratio **{t['ratio']:.2f}** ("
                         f"{'faster than' if t['met'] else 'slower than'} the dense FFN)"
                         + (f"; cold-cache ratio {t['ratio_cold']:.2f}" if t.get("ratio_cold") else ""))
    lines += speed_floor_lines(results)
    t = target.get("loop")
    if t:
        lines.append(f"- loop at {t['tokens']} tokens: {t['loop_s']:.2f} s; fastest MoE path `{t['fastest']}` "
                     f"{t['fastest_s'] * 1e3:.1f} ms: **{t['speedup']:.0f}x** faster")
    lines += ["", "## Scaling", "", "![time vs tokens](scaling_tokens.png) ![time vs experts](scaling_experts.png)",
              ""]
    lines += _scaling_table(results, "scale_tokens", [f"{t} tok" for t in cfg["scale_tokens"]])
    lines += [""]
    lines += _scaling_table(results, "scale_experts", [f"E={e}" for e in cfg["scale_experts"]])
    lines += ["", "Times in ms (forward). Experts: top-2 and ffn fixed, so the active FLOPs per token are the same "
              "for every E; the parameters grow with E.", "", "## Where the time goes", "",
              "![breakdown](breakdown.png)", "",
              "MindSpore's CPU profiler, summed per op type, mean ms per step, inside the compiled graphs.", ""]
    for b in results.get("breakdown", []):
        if b.get("status") != "ok":
            lines.append(f"- {path_label(results, b['path'], english=True)} {b['pass']}: {b.get('error', 'failed')}")
            continue
        total = sum(b["op_ms"].values())
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(b["op_ms"].items())[:8])
        wall = np.median(b["runs_s"]) * 1e3
        lines.append(f"- **{path_label(results, b['path'], english=True)}, {b['pass']}** (wall {wall:.1f} ms, "
                     f"ops {total:.1f} ms): {top}")
    lines.append("")
    return "\n".join(lines)


def _scaling_table(results: dict, key: str, columns: list[str]) -> list[str]:
    """Markdown rows of one scaling section (``scale_tokens`` or ``scale_experts``): ms per path and x value."""
    lines = ["| path | mode | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for group in results.get(key, []):
        if group:
            cells = [_fmt(None if _median(c) is None else _median(c) * 1e3, ".1f") for c in group]
            lines.append(f"| {path_label(results, group[0]['path'], english=True)} | {MODES[group[0]['mode']]} | "
                         + " | ".join(cells) + " |")
    return lines


def speed_floor_lines(results: dict) -> list[str]:
    """Markdown bullets: how close to the dense FFN any MoE path could get (the ``floor`` case, the experts'
    matmuls alone) and the FLOP rate of the forward matmuls. Notebook 03 prints them; so does RESULTS.md."""
    target, mach = results.get("speed_target", {}), results["machine"]
    lines = []
    for p in PASSES:
        t = target.get(p, {})
        if t.get("floor_ratio") is None:
            continue
        floor = path_label(results, "floor", english=True)
        alone = (f"- {p}: the experts' matmuls alone (`{floor}`: a perfectly balanced "
                 f"buffer, already gathered; no router, no dispatch, no padding) take ratio **{t['floor_ratio']:.2f}**"
                 + (f" (cold {t['floor_ratio_cold']:.2f})" if t.get("floor_ratio_cold") else ""))
        if t["floor_ratio"] <= t["ratio"]:
            extra_ms = (t["ratio"] - t["floor_ratio"]) * t["baseline_s"] * 1e3
            lines.append(alone + ". That is the floor: a MoE path runs the same matmuls and more. Routing, dispatch, "
                                 f"combine and padding add {extra_ms:.1f} ms to it in the fastest path")
        else:  # measured: compiled in a graph of their own, the backward matmuls are slower than in the layer's
            lines.append(alone + f", more than the fastest MoE path ({t['ratio']:.2f}): in a graph of their own "
                                 "the same matmuls compile to a slower backward, so this is no floor for this pass")
    rates = target.get("forward", {}).get("gflop_per_s")
    if rates:
        line = (f"- forward matmul rate: dense FFN {rates['baseline']:.0f} GFLOP/s"
                + (f", expert matmuls only {rates['floor']:.0f}" if "floor" in rates else "")
                + f", fastest MoE path {rates['fastest']:.0f} (router FLOPs not counted)")
        if mach.get("cpu_mhz") and mach.get("cores"):
            per_cycle = rates["baseline"] * 1e9 / (mach["cores"] * mach["cpu_mhz"] * 1e6)
            line += (f"; the dense FFN does {per_cycle:.0f} float32 FLOP per cycle per core at the nominal "
                     f"{mach['cpu_mhz']:.0f} MHz")
            if mach.get("simd") == "avx512f":
                line += " (AVX-512: 32 per FMA unit, and a core has one or two)"
        lines.append(line)
    return lines


def _figure(ncols: int = 1, width: float = 6.4):
    fig, axes = plt.subplots(1, ncols, figsize=(width, 3.6), squeeze=False)
    return fig, axes[0]


def plot_paths(results: dict):
    """Every path and mode at the main size: time / dense FFN (``case_ratio``), forward and forward+backward.

    Bars start at 1 (the dense FFN, dashed line) and end at the ratio, on a log axis: left of the line
    is faster than the dense FFN, right is slower. Grey: the dense FFNs; olive: the experts' matmuls alone
    (the floor of every MoE path); green: MoE paths at or below 1. The loop, measured at fewer tokens, is
    not in here.

    Introduced in notebook 03.
    """
    fig, axes = _figure(2, 11.0)
    main_tokens = results["config"]["tokens"]
    for ax, p in zip(axes, PASSES, strict=True):
        rows = [(_path_and_mode(results, c["path"], c["mode"]), case_ratio(results, c), c["path"])
                for c in results["cases"] if c["pass"] == p and c["tokens"] == main_tokens]
        rows = sorted((r for r in rows if r[1] is not None), key=lambda r: r[1])
        ratios = np.array([r[1] for r in rows])
        colors = ["#7f7f7f" if r[2] in FFN_PATHS else "#bcbd22" if r[2] == "floor"
                  else ("#2ca02c" if r[1] <= 1 else "#1f77b4") for r in rows]
        ax.barh(np.arange(len(rows)), ratios - 1.0, left=1.0, color=colors)
        ax.set_yticks(np.arange(len(rows)), [r[0] for r in rows], fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", ls="--", lw=1)
        # always 0.5..2 at least, so that the axis shows both sides of the dense FFN
        lo = min(0.5, ratios.min() / 1.2) if len(rows) else 0.5
        hi = max(2.0, ratios.max() * 1.2) if len(rows) else 2.0
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator(ratio_ticks(lo, hi)))
        ax.xaxis.set_major_formatter(_ratio_formatter())
        ax.xaxis.set_minor_formatter(_no_labels())
        ax.set_xlabel(_("time / dense FFN with the same FLOPs (log; dashed line: 1x)"))
        ax.set_title(_("{pass_name}, {tokens} tokens").format(pass_name=_(PASS_NAMES[p]), tokens=main_tokens))
    fig.tight_layout()
    return fig


def ratio_ticks(lo: float, hi: float) -> list[float]:
    """Tick values 1-2-5 per decade (0.5, 1, 2, 5, 10, ...) inside ``[lo, hi]``, for a log ratio axis.

    A log axis from 0.5 to 9 gets a single labelled major tick (1) from matplotlib's default locator;
    these give every axis that spans at least 0.5..2 three or more labels. Introduced in notebook 03."""
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    first, last = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    ticks = [m * 10.0 ** p for p in range(first, last + 1) for m in (1, 2, 5)]
    return [round(t, 12) for t in ticks if lo <= t <= hi]


def _ratio_formatter():
    return FuncFormatter(lambda v, _: f"{v:g}x")


def _no_labels():
    return NullFormatter()


def _plot_scaling(results: dict, key: str, xkey: str, xlabel: str, title: str):
    fig, axes = _figure(1, 8.0)
    ax = axes[0]
    for group in results.get(key, []):
        pts = [(c.get(xkey, results["config"].get(xkey)), _median(c)) for c in group if _median(c)]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        style = "--" if group[0]["path"] in FFN_PATHS else "-"
        ax.plot(xs, np.array(ys) * 1e3, style, marker="o", ms=3,
                label=f"{path_label(results, group[0]['path'], english=True)}, "
                      f"{MODES.get(group[0]['mode'], group[0]['mode'])}")
    if key == "scale_tokens":
        loops = [c for c in results["cases"] if c["path"] == "loop" and c["pass"] == "forward" and _median(c)]
        if loops:
            ax.plot([c["tokens"] for c in loops], [_median(c) * 1e3 for c in loops], ":", marker="x",
                    color="#d62728", label="loop, PyNative")
    if key == "scale_experts":
        base = baseline(results, "forward")
        if base:
            ax.axhline(base[1] * 1e3, color="k", ls="--", lw=1,
                       label=f"{path_label(results, base[0], english=True)}, jit (same FLOPs)")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("median forward time (ms, log)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_scaling_tokens(results: dict):
    """Forward time vs number of tokens, one line per path (log-log); the loop's measured points in red. Notebook 03."""
    cfg = results["config"]
    return _plot_scaling(results, "scale_tokens", "tokens", "tokens",
                         f"time vs tokens (H {cfg['hidden']}, F {cfg['ffn']}, E {cfg['experts']}, top-{cfg['top_k']})")


def plot_scaling_experts(results: dict):
    """Forward time vs number of experts at equal active FLOPs (top-k and ffn fixed). Notebook 03."""
    cfg = results["config"]
    return _plot_scaling(results, "scale_experts", "experts", "experts (active FLOPs per token fixed)",
                         f"time vs experts ({cfg['tokens']} tokens, top-{cfg['top_k']}, F {cfg['ffn']})")


def plot_breakdown(results: dict, top: int = 6):
    """Stacked bars: ms per op type inside the compiled graphs (fastest MoE path and dense FFN). Notebook 03."""
    fig, axes = _figure(1, 8.5)
    ax = axes[0]
    bars = [b for b in results.get("breakdown", []) if b.get("status") == "ok"]
    names = []
    totals: dict[str, float] = {}
    for b in bars:
        for k, v in b["op_ms"].items():
            totals[k] = totals.get(k, 0.0) + v
    keep = [k for k, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]
    colors = {k: f"C{i}" for i, k in enumerate(keep + ["other"])}
    for i, b in enumerate(bars):
        names.append(f"{path_label(results, b['path'], english=True)}\n{b['pass']}")
        left = 0.0
        parts = [(k, b["op_ms"].get(k, 0.0)) for k in keep]
        parts.append(("other", sum(v for k, v in b["op_ms"].items() if k not in keep)))
        for k, v in parts:
            ax.barh(i, v, left=left, color=colors[k], label=k if i == 0 else None)
            left += v
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per call, by op type (MindSpore CPU profiler)")
    ax.set_title("where the time goes")
    if bars:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig
