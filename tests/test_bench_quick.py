"""The dispatch benchmark: quick mode runs end to end and writes well-formed results; the report helpers
(table, markdown, plots) work on a results dict. No timing is asserted anywhere."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from benchmarks import moe_bench  # noqa: E402
from moe_lab import bench_report  # noqa: E402
from moe_lab.textfmt import width  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.moe_bench", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_quick_mode_writes_every_file(quick_run):
    names = sorted(p.name for p in quick_run.iterdir())
    assert names == ["RESULTS.md", "breakdown.png", "paths.png", "results.json", "scaling_experts.png",
                     "scaling_tokens.png"]  # and no leftover temporary file
    for png in quick_run.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_results_are_well_formed(quick_run):
    results = bench_report.load_results(quick_run / "results.json")
    assert results["quick"] is True
    assert {"cpu", "cores", "mindspore", "numpy", "date"} <= set(results["machine"])
    assert {"start", "mean", "max", "end"} <= set(results["load_avg_1min"])
    cfg = results["config"]
    cases = results["cases"]
    planned = moe_bench.plan_cases(cfg)["main"]
    assert [(c["path"], c["mode"], c["pass"], c["tokens"]) for c in cases] == \
        [(c["path"], c["mode"], c["pass"], c["tokens"]) for c in planned]
    failed = [(c["path"], c["mode"], c["pass"], c.get("error")) for c in cases
              if c["status"] != "ok" and not c.get("attempt")]
    assert not failed
    # the host-synced paths under ast jit: MindSpore refuses them, and the reason is recorded
    attempts = {c["path"]: c for c in cases if c.get("attempt")}
    assert set(attempts) == {"sorted", "loop"}
    for c in attempts.values():
        assert c["status"] in ("ok", "not compiled") and (c["status"] == "ok" or c["error"])
    for c in cases:
        if c.get("attempt"):
            continue
        assert len(c["runs_s"]) == (cfg["loop_repeats"] if c["path"] == "loop" else cfg["repeats"]) >= 5
        assert c["median_s"] > 0 and c["tokens_per_s"] > 0
        if c["tokens"] == cfg["tokens"]:
            assert c["ratio_to_baseline"] > 0
            assert set(c["baseline_runs_s"]) == set(c["baseline_runs_cold_s"]) == {"ffn", "ffn_nn"}  # in turns
            assert all(len(v) == cfg["repeats"] for v in c["baseline_runs_s"].values())
            assert len(c["runs_cold_s"]) == cfg["repeats"] and c["ratio_cold_to_baseline"] > 0
        if c["pass"] == "forward" and c["path"] in moe_bench.MOE_PATHS:
            assert c["max_abs_err"] < 1e-4, c  # every path computed the same output
    # every MoE path ran, PyNative and (where it compiles) under jit
    seen = {(c["path"], c["mode"]) for c in cases}
    for path in ("dense", "capacity", "dropless"):
        assert (path, "jit") in seen and (path, "pynative") in seen
    assert ("sorted", "jit-bytecode") in seen and ("loop", "pynative") in seen
    assert ("floor", "jit") in seen  # the experts' matmuls alone, forward and forward+backward
    for passname in ("forward", "forward+backward"):
        assert results["speed_target"][passname]["floor_ratio"] > 0
    assert set(results["speed_target"]["forward"]["gflop_per_s"]) == {"baseline", "floor", "fastest"}
    assert {("ffn", "jit"), ("ffn_nn", "jit"), ("ffn", "pynative"), ("ffn_nn", "pynative")} <= seen
    for passname, base in results["baseline"].items():  # the faster of the two dense FFNs under jit
        ffn = [c for c in cases if c["path"] in ("ffn", "ffn_nn") and c["mode"] == "jit" and c["pass"] == passname]
        assert len(ffn) == 2 and min(c["median_s"] for c in ffn) == base["median_s"]
    assert set(results["speed_target"]) >= {"forward", "forward+backward"}
    for group in results["scale_tokens"]:
        assert [c["tokens"] for c in group] == cfg["scale_tokens"]
        assert all(c["status"] == "ok" and c["interleaved"] and len(c["runs_s"]) == cfg["scale_repeats"] >= 5
                   for c in group)
    assert [g[0]["path"] for g in results["scale_tokens"]] == [p for p, _ in cfg["scale_token_paths"]]
    for group in results["scale_experts"]:
        assert [c["experts"] for c in group] == cfg["scale_experts"]
    assert results["breakdown"] and all(b["status"] == "ok" and b["op_ms"] for b in results["breakdown"])
    md = (quick_run / "RESULTS.md").read_text()
    assert "QUICK MODE" in md and "| path | mode |" in md and "Against the dense FFN" in md


def test_replot_rewrites_from_results(quick_run, tmp_path):
    (tmp_path / "results.json").write_bytes((quick_run / "results.json").read_bytes())
    proc = subprocess.run([sys.executable, "-m", "benchmarks.moe_bench", "--replot", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "RESULTS.md").read_text() == (quick_run / "RESULTS.md").read_text()
    assert len(list(tmp_path.glob("*.png"))) == 4
    proc = subprocess.run([sys.executable, "-m", "benchmarks.moe_bench", "--replot", "--out", str(tmp_path / "no")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no benchmark results" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_repeats_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.moe_bench", "--quick", "--repeats", "3", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--repeats must be >= 5" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ report helpers on a synthetic results dict

def case(path, mode, passname, tokens, median, **extra):
    return dict(path=path, mode=mode, tokens=tokens, status="ok", runs_s=[median] * 5, first_call_s=1.0,
                rss_before_mb=500.0, peak_rss_mb=800.0, **{"pass": passname}, **extra)


@pytest.fixture()
def synthetic():
    cfg = dict(moe_bench.FULL)
    cases = [case("ffn", "jit", "forward", 4096, 0.10), case("ffn", "jit", "forward+backward", 4096, 0.40),
             case("ffn_nn", "jit", "forward", 4096, 0.11), case("ffn_nn", "jit", "forward+backward", 4096, 0.35),
             case("ffn", "pynative", "forward", 4096, 0.20),
             case("dropless", "jit", "forward", 4096, 0.12), case("dropless", "jit", "forward+backward", 4096, 0.30),
             case("sorted", "pynative", "forward", 4096, 0.50),
             dict(path="sorted", mode="jit-bytecode", **{"pass": "forward"}, tokens=4096, status="failed",
                  error="TypeError: nope"),
             case("floor", "jit", "forward", 4096, 0.105), case("floor", "jit", "forward+backward", 4096, 0.25),
             case("loop", "pynative", "forward", 256, 3.0), case("loop", "pynative", "forward", 1024, 30.0)]
    results = {"quick": False, "config": cfg, "machine": {"cpu": "Test CPU", "cores": 2, "cpu_mhz": 2500.0,
                                                          "simd": "avx512f", "platform": "x",
                                                          "python": "3.11", "mindspore": "2.10.0",
                                                          "numpy": "1.26.4", "date": "2026-01-01 00:00 UTC"},
               "load_avg_1min": {"start": 0.1, "mean": 0.2, "max": 0.3, "end": 0.1}, "memory_per_case": True,
               "cases": cases,
               "scale_tokens": [[case("ffn", "jit", "forward", t, t / 4096 * 0.1) for t in cfg["scale_tokens"]],
                                [case("dropless", "jit", "forward", t, t / 4096 * 0.12) for t in cfg["scale_tokens"]]],
               "scale_experts": [[case("dropless", "jit", "forward", 4096, 0.12 + e / 1000, experts=e)
                                  for e in cfg["scale_experts"]]],
               "breakdown": [dict(case("dropless", "jit", "forward", 4096, 0.12), kind="breakdown",
                                  op_ms={"BatchMatMul": 100.0, "ReLU": 8.0, "Gather": 4.0}),
                             dict(case("ffn", "jit", "forward", 4096, 0.10), kind="breakdown",
                                  op_ms={"MatMul": 90.0, "ReLU": 8.0})]}
    return moe_bench.summarise(results)


def test_summarise_ratios_and_targets(synthetic):
    t = synthetic["speed_target"]
    assert t["forward"]["fastest"] == "dropless jit" and t["forward"]["ratio"] == pytest.approx(1.2)
    assert not t["forward"]["met"]
    assert t["forward+backward"]["ratio"] == pytest.approx(0.30 / 0.35) and t["forward+backward"]["met"]
    assert t["forward"]["baseline"] == "ffn" and t["forward+backward"]["baseline"] == "ffn_nn"
    assert synthetic["baseline"]["forward+backward"] == {"path": "ffn_nn", "median_s": 0.35}
    assert t["loop"]["tokens"] == 1024 and t["loop"]["speedup"] == pytest.approx(30.0 / (1024 / 4096 * 0.12))
    assert t["loop"]["met"]
    assert moe_bench.fastest_compiled(synthetic["cases"], "forward", 4096) == "dropless"


def test_floor_and_flop_rate(synthetic):
    t = synthetic["speed_target"]
    # the floor is not a MoE path: it never wins the target, it bounds it
    assert t["forward"]["fastest"] == "dropless jit"
    assert t["forward"]["floor_ratio"] == pytest.approx(0.105 / 0.10)
    assert t["forward+backward"]["floor_ratio"] == pytest.approx(0.25 / 0.35)
    flop = 2 * 4096 * 2 * 512 * 2 * 2048  # two matmuls of 2*H*(K*F) FLOPs per token
    assert moe_bench.forward_matmul_flop(moe_bench.FULL) == flop
    rates = t["forward"]["gflop_per_s"]
    assert rates["baseline"] == pytest.approx(flop / 0.10 / 1e9) and rates["floor"] == pytest.approx(flop / 0.105 / 1e9)
    assert rates["fastest"] == pytest.approx(flop / 0.12 / 1e9)
    lines = bench_report.speed_floor_lines(synthetic)
    assert len(lines) == 3
    assert "ratio **1.05**" in lines[0] and "add 15.0 ms" in lines[0]  # (1.20 - 1.05) x 100 ms
    assert "That is the floor" in lines[0]
    # forward+backward: the matmuls alone (0.25 / 0.35 = 0.71) are not slower than the MoE (0.86): a floor
    assert "That is the floor" in lines[1] and "add 50.0 ms" in lines[1]  # (0.86 - 0.71) x 350 ms
    slow = dict(synthetic, speed_target={k: dict(v) for k, v in synthetic["speed_target"].items()})
    slow["speed_target"]["forward+backward"]["floor_ratio"] = 1.5  # above the MoE's own ratio: no floor
    slow_lines = bench_report.speed_floor_lines(slow)
    assert "no floor for this pass" in slow_lines[1] and "That is the floor" in slow_lines[0]
    assert f"dense FFN {flop / 0.10 / 1e9:.0f} GFLOP/s" in lines[2]
    assert f"{flop / 0.10 / (2 * 2500e6):.0f} float32 FLOP per cycle per core" in lines[2]
    assert lines[0] in bench_report.results_markdown(synthetic)
    row = next(r for r in bench_report.results_table(synthetic) if r["path"] == "expert matmuls only")
    assert row["forward_ratio"] == pytest.approx(1.05)


def test_paired_ratio_uses_the_alternated_baseline_runs(synthetic):
    c = case("capacity", "jit", "forward", 4096, 0.2, baseline_runs_s={"ffn": [0.4] * 5, "ffn_nn": [0.25] * 5},
             runs_cold_s=[0.3] * 5, baseline_runs_cold_s={"ffn": [0.5] * 5, "ffn_nn": [0.6] * 5})
    assert bench_report.case_ratio(synthetic, c) == pytest.approx(0.2 / 0.25)  # not the run's 0.10 baseline
    assert bench_report.case_ratio(synthetic, c, cold=True) == pytest.approx(0.3 / 0.5)
    assert bench_report.case_ratio(synthetic, synthetic["cases"][0], cold=True) is None  # no cold timings
    synthetic["cases"].append(c)
    t = moe_bench.summarise(synthetic)["speed_target"]["forward"]
    assert t["fastest"] == "capacity jit" and t["paired"] and t["baseline"] == "ffn_nn"
    assert t["ratio"] == pytest.approx(0.8) and t["met"] and t["baseline_s"] == pytest.approx(0.25)
    assert t["ratio_cold"] == pytest.approx(0.6)
    row = next(r for r in bench_report.results_table(synthetic) if r["path"] == "capacity (cf 1.25)")
    assert row["forward_ratio_cold"] == pytest.approx(0.6) and row["backward_ratio_cold"] is None
    assert "cold-cache ratio 0.60" in bench_report.results_markdown(synthetic)
    assert bench_report.case_ratio(synthetic, case("loop", "pynative", "forward", 1024, 30.0)) is None


def test_results_table(synthetic):
    rows = {(r["path"], r["mode"], r["tokens"]): r for r in bench_report.results_table(synthetic)}
    r = rows[("capacity (dropless, padded)", "jit", 4096)]
    assert r["forward_ms"] == pytest.approx(120) and r["forward_ratio"] == pytest.approx(1.2)
    assert r["backward_ms"] == pytest.approx(300) and r["backward_ratio"] == pytest.approx(0.30 / 0.35)
    assert r["forward_tokens_per_s"] == pytest.approx(4096 / 0.12) and r["extra_rss_mb"] == pytest.approx(300)
    assert rows[("loop", "PyNative", 1024)]["forward_ratio"] is None  # not at the main size
    assert rows[("sorted", "jit (bytecode)", 4096)]["note"] == "failed (forward): TypeError: nope"


def test_results_markdown(synthetic):
    md = bench_report.results_markdown(synthetic)
    assert "Test CPU, 2 cores" in md and "MindSpore 2.10.0" in md and "QUICK" not in md
    assert "ratio **1.20** (slower than the dense FFN)" in md
    assert "vs dense FFN (nn.Dense) jit 350.0 ms: ratio **0.86** (faster than the dense FFN)" in md
    assert "**1000x** faster" in md
    assert "BatchMatMul 100.0" in md


def test_summary_lines(synthetic):
    """What notebook 03 prints: the numbers it discusses, in a learner's words (no benchmark jargon)."""
    dropless = next(c for c in synthetic["cases"] if c["path"] == "dropless" and c["pass"] == "forward")
    dropless.update(capacity=1088, max_load=1058)
    synthetic["cases"].append(case("dense", "jit", "forward", 4096, 0.45))
    lines = bench_report.summary_lines(synthetic)
    assert lines[0].startswith("layer: 4096 tokens, hidden_size 512, intermediate_size 2048, 8 experts, top-2")
    assert "Test CPU, 2 cores" in lines[0]
    assert lines[1] == ("forward:          fastest MoE path capacity (dropless, padded), jit: 1.20x the dense FFN; "
                        "the experts' matmuls alone: 1.05x")
    assert lines[2].startswith("forward+backward: fastest MoE path capacity (dropless, padded), jit: 0.86x")
    assert lines[3] == "dense (all experts), jit: 4.50x the dense FFN, forward; it computes 4x the FLOPs"
    assert lines[4] == ("loop at 1024 tokens: 30.0 s, 1000x the time of capacity (dropless, padded), jit "
                        "(30.0 ms)")  # the dropless path at 1024 tokens: 1024 / 4096 * 120 ms
    assert lines[5] == ("dropless buffer: busiest expert 1058 slots (mean 1024), rounded up to C = 1088 rows per "
                        "expert: 6.2% of the rows are padding")
    text = "\n".join(lines).lower()
    for word in ("target", "research", "course", "issue"):
        assert word not in text
    # a results file without the optional parts still gives the layer line, and no error
    bare = dict(synthetic, cases=[], speed_target={})
    assert bench_report.summary_lines(bare) == lines[:1]


def test_ratio_ticks():
    assert bench_report.ratio_ticks(0.5, 8.8) == [0.5, 1.0, 2.0, 5.0]
    assert bench_report.ratio_ticks(0.5, 2.0) == [0.5, 1.0, 2.0]  # the narrowest axis plot_paths draws
    assert bench_report.ratio_ticks(0.05, 300) == [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200]
    for lo, hi in ((0.0, 2.0), (2.0, 1.0), (-1.0, 1.0)):
        with pytest.raises(ValueError, match="0 < lo < hi"):
            bench_report.ratio_ticks(lo, hi)


def test_load_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="make bench"):
        bench_report.load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="machine"):
        bench_report.load_results(bad)
    with pytest.raises(ValueError, match="path must be one of"):
        bench_report.path_label({"config": {"capacity_factor": 1.25}}, "fast")


def test_plots(synthetic):
    fig = bench_report.plot_paths(synthetic)
    fwd, bwd = fig.axes
    # 2 ffn jit, ffn pynative, dropless jit, floor jit, sorted pynative (not the failed one)
    assert len(fwd.patches) == 6
    floor = [p for p in fwd.patches if p.get_width() == pytest.approx(0.105 / 0.10 - 1)]
    assert len(floor) == 1 and matplotlib.colors.to_hex(floor[0].get_facecolor()) == "#bcbd22"
    assert fwd.lines[0].get_xdata()[0] == pytest.approx(1.0)  # the dense FFN
    # bars run from 1 to the ratio: dropless jit at 0.12 / 0.10
    widths = sorted(p.get_width() for p in fwd.patches)
    assert widths[-1] == pytest.approx(0.50 / 0.10 - 1) and pytest.approx(0.0) in widths
    assert fwd.get_xscale() == "log"
    for ax in (fwd, bwd):  # a log axis with several labelled ticks, not a lone "1x"
        fig.canvas.draw()
        lo, hi = ax.get_xlim()
        labels = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()]
        assert len(labels) >= 3 and "1x" in labels, labels
        assert ax.get_legend() is None  # nothing drawn over the bars; the x label says what 1x is
    plt.close(fig)
    fig = bench_report.plot_scaling_tokens(synthetic)
    (ax,) = fig.axes
    assert len(ax.lines) == 3  # two paths + the loop's measured points
    assert list(ax.lines[2].get_xdata()) == [256, 1024]
    plt.close(fig)
    fig = bench_report.plot_scaling_experts(synthetic)
    (ax,) = fig.axes
    assert list(ax.lines[0].get_xdata()) == moe_bench.FULL["scale_experts"]
    assert ax.lines[1].get_ydata()[0] == pytest.approx(100.0)  # the dense FFN line, in ms
    plt.close(fig)
    fig = bench_report.plot_breakdown(synthetic)
    (ax,) = fig.axes
    widths = [p.get_width() for p in ax.patches]
    assert sum(widths) == pytest.approx(100 + 8 + 4 + 90 + 8)
    plt.close(fig)


def test_readme_speed_section_matches_the_stored_results():
    """The README quotes benchmarks/results.json: its headline figures must be the stored run's."""
    results = bench_report.load_results()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    speed = readme[readme.index("## Speed"):readme.index("## Running on an Atlas board")]
    t = results["speed_target"]
    fwd, both, loop = t["forward"], t["forward+backward"], t["loop"]
    rows = {(r["path"], r["mode"]): r for r in bench_report.results_table(results) if r["tokens"] == 4096}
    expected = [
        f"**{fwd['ratio']:.2f}**", f"**{both['ratio']:.2f}**", f"{both['ratio']:.2f}× the equal-FLOPs",
        f"take {fwd['floor_ratio']:.2f}× the dense FFN ({fwd['floor_ratio_cold']:.2f}× cold)",
        f"{fwd['gflop_per_s']['baseline']:.0f} GFLOP/s", f"**{loop['speedup']:.0f}×**",
        f"{loop['loop_s']:.1f} s against {loop['fastest_s'] * 1e3:.1f} ms",
        f"run of {results['machine']['date'].removesuffix(' UTC')} UTC",
        f"| {rows[('expert matmuls only', 'jit')]['forward_ms']:.0f} ms | {fwd['floor_ratio']:.2f} |",
        f"| {rows[('capacity (dropless, padded)', 'jit')]['backward_ms']:.0f} ms | **{both['ratio']:.2f}** |",
    ]
    machine = results["machine"]
    per_cycle = fwd["gflop_per_s"]["baseline"] * 1e9 / (machine["cores"] * machine["cpu_mhz"] * 1e6)
    expected.append(f"{per_cycle:.0f} float32 FLOP per cycle per core")
    missing = [e for e in expected if e not in speed]
    assert not missing, missing


def test_readme_quotes_the_training_host_wait_and_pytorch_figures():
    """The README's other speed figures are the stored records': notebook 04's train step, the host wait, and the
    PyTorch peer of the MoE layer."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    speed = readme[readme.index("## Speed"):readme.index("## Running on an Atlas board")]
    bench = ROOT / "benchmarks"
    steps = json.loads((bench / "train_throughput.json").read_text())["cases"]["notebook"]["variants"]
    wait = json.loads((bench / "host_wait.json").read_text())
    peer = json.loads((bench / "torch_peer.json").read_text())
    results = bench_report.load_results()
    fastest = results["speed_target"]["forward"]
    expected = [
        f"**{steps['after']['steps_per_second']:.1f} steps/s** ({steps['after']['median_step_ms']:.1f} ms per step)",
        f"against {steps['before']['steps_per_second']:.1f} for the step it replaced",
        f"{steps['after']['speedup_over_before']:.1f}×",
        f"({wait['ratio_busy_wait_over_blocking']:.1f}× on a small step",
        f"takes {peer['forward']['ratio']:.2f}× *its own* dense",
        f"runs at {peer['forward']['dense_gflop_per_s']:.0f} GFLOP/s against MindSpore's "
        f"{fastest['gflop_per_s']['baseline']:.0f}",
        f"takes {peer['forward']['moe_ms']:.0f} ms there against {fastest['median_s'] * 1e3:.0f} ms here",
    ]
    missing = [e for e in expected if e not in " ".join(speed.split())]
    assert not missing, missing


def test_summary_lines_in_chinese_keep_the_numbers_and_line_up(synthetic, zh):
    lines = bench_report.summary_lines(synthetic)
    assert lines[0] == ("层：4096 个 token，hidden_size 512，intermediate_size 2048，8 个专家，top-2，float32；"
                        "Test CPU，2 核，MindSpore 2.10.0")
    assert lines[1].startswith("前向：") and lines[2].startswith("前向+反向：")
    assert lines[1].endswith("最快的 MoE 路径 capacity（无丢弃，填充），jit：耗时是稠密 FFN 的 1.20x；"
                             "仅专家矩阵乘：1.05x")
    # the two passes' sentences start in the same display column (a Chinese character takes two)
    assert width(lines[1][:lines[1].index("最快")]) == width(lines[2][:lines[2].index("最快")])
    assert lines[3] == "loop 在 1024 个 token 时：30.0 s，是 capacity（无丢弃，填充），jit（30.0 ms）耗时的 1000x"


def test_plot_paths_labels_in_chinese_and_markdown_in_english(synthetic, zh):
    fig = bench_report.plot_paths(synthetic)
    assert [ax.get_title() for ax in fig.axes] == ["前向，4096 个 token", "前向+反向，4096 个 token"]
    assert "稠密 FFN（nn.Dense），jit" in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    plt.close(fig)
    md = bench_report.results_markdown(synthetic)  # written for engineers, whatever the language
    assert "| dense FFN (nn.Dense) | jit |" in md and not re.search(r"[\u4e00-\u9fff]", md)
