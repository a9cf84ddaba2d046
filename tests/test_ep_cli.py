"""``python -m moe_lab ep``: bad input, a missing launcher, a worker that dies and a job that hangs all
end in one line and exit status 2, with every process of the job gone and nothing half-written."""

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from moe_lab.ascend.backend import Backend
from moe_lab.i18n import _
from moe_lab.parallel import cli as ep_cli
from moe_lab.parallel.cli import EPJobError, find_launcher, format_table, job_processes, run_ep, write_json
from moe_lab.parallel.layer import choose_strategy
from moe_lab.parallel.sim import simulate, summary_line
from moe_lab.textfmt import width

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def any_ep_job_processes():
    """Processes of any expert-parallel job (whatever their token)."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if ep_cli.JOB_ENV in p.environ() and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def remove_log_dir(message):
    m = re.search(r"logs in (\S+)$", message)
    assert m, message
    assert os.path.basename(m.group(1)).startswith("moe_lab_ep_")
    shutil.rmtree(m.group(1), ignore_errors=True)


def fake_launcher(tmp_path, body):
    path = tmp_path / "fake_msrun"
    path.write_text("#!" + sys.executable + "\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize("argv, expected", [
    (["--world-size", "3"], "world_size must divide num_experts=8 .* got world_size=3, allowed: \\[1, 2, 4, 8\\]"),
    (["--world-size", "0"], "world_size must be >= 1, got 0"),
    (["--world-size", "-2"], "world_size must be >= 1, got -2"),
    (["--world-size", "two"], "argument --world-size: invalid int value: 'two'"),
    (["--world-size", "4", "--num-experts", "6"], "world_size must divide num_experts=6 .* allowed: \\[1, 2, 3, 6\\]"),
    (["--world-size", "2", "--top-k", "9"], "top_k must be <= 8, got 9"),
    (["--world-size", "2", "--strategy", "ring"], "strategy must be one of 'auto', 'all'"),
    (["--world-size", "2", "--strategy", "fused"], "strategy 'fused' needs MoeDistributeDispatch"),
    (["--world-size", "2", "--timeout", "0"], "timeout must be > 0.0, got 0.0"),
    (["--world-size", "2", "--fail-rank", "2"], "fail_rank must be <= 1, got 2"),
    (["--world-size", "2", "--bogus"], "unrecognized arguments: --bogus"),
    (["--world-size", "2", "--scoring-func", "tanh"], "scoring_func must be one of 'softmax', 'sigmoid'; got 'tanh'"),
    (["--world-size", "2", "--n-shared-experts", "-1"], "n_shared_experts must be >= 0, got -1"),
    (["--world-size", "2", "--routed-scaling-factor", "0"], "routed_scaling_factor must be > 0.0, got 0.0"),
    (["--world-size", "2", "--n-group", "3"], "n_group must divide the number of experts 8, got n_group=3"),
    (["--world-size", "2", "--n-group", "4", "--topk-group", "5"], "topk_group must be <= n_group=4, got topk_group=5"),
    (["--world-size", "2", "--n-group", "4", "--topk-group", "1", "--top-k", "3"],
     "top_k must be <= the 2 experts that topk_group=1 of n_group=4 groups hold; got top_k=3"),
    (["--world-size", "2", "--tokens-per-rank", "0"], "tokens_per_rank must be >= 1, got 0"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, expected):
    assert ep_cli.main(argv) == 2
    assert re.search(expected, one_error_line(capsys))


def test_help_lists_the_layer_options(capsys):
    with pytest.raises(SystemExit) as stop:
        ep_cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--world-size", "--hidden-size", "--intermediate-size", "--num-experts", "--top-k", "--scoring-func",
                 "--n-shared-experts", "--routed-scaling-factor", "--n-group", "--topk-group", "--strategy"):
        assert flag in out


def test_world_size_6_of_8_experts_is_refused_before_anything_starts(capsys):
    before = set(p.pid for p in any_ep_job_processes())
    assert ep_cli.main(["--world-size", "6"]) == 2
    assert "got world_size=6" in one_error_line(capsys)
    assert set(p.pid for p in any_ep_job_processes()) == before


def test_missing_launcher_path(capsys):
    assert ep_cli.main(["--world-size", "2", "--launcher", "/nonexistent/bin/msrun"]) == 2
    assert "launcher '/nonexistent/bin/msrun' does not exist or is not executable" in one_error_line(capsys)


def test_missing_launcher_on_path(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no msrun anywhere on PATH
    assert ep_cli.main(["--world-size", "2", "--launcher", "msrun"]) == 2
    assert "launcher 'msrun' was not found on PATH" in one_error_line(capsys)
    with pytest.raises(FileNotFoundError, match="not found on PATH"):
        find_launcher("msrun", path=str(tmp_path))


def test_default_launcher_falls_back_then_fails(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setattr(ep_cli.sys, "executable", str(tmp_path / "python"))  # no msrun beside it
    assert find_launcher(path=str(tmp_path)) == [str(tmp_path / "python"), "-m", ep_cli.LAUNCHER_MODULE]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # and no MindSpore either
    with pytest.raises(FileNotFoundError, match="msrun .* was not found and MindSpore is not installed"):
        find_launcher(path=str(tmp_path))


def test_default_launcher_is_found():
    cmd = find_launcher()
    assert os.path.basename(cmd[0]) == "msrun" or cmd[-1] == ep_cli.LAUNCHER_MODULE


def test_out_folder_must_exist(capsys, tmp_path):
    assert ep_cli.main(["--world-size", "2", "--out", str(tmp_path / "no" / "ep.json")]) == 2
    assert "--out folder" in one_error_line(capsys)


def test_launcher_that_fails_at_once(capsys, tmp_path):
    launcher = fake_launcher(tmp_path, """
        import sys
        print("msrun: cannot bind the scheduler port", flush=True)
        sys.exit(1)
    """)
    assert ep_cli.main(["--world-size", "2", "--launcher", launcher, "--timeout", "30"]) == 2
    line = one_error_line(capsys)
    assert "the launcher exited with code 1: msrun: cannot bind the scheduler port" in line
    remove_log_dir(line)


def test_hanging_job_is_stopped_with_all_its_processes(tmp_path):
    """A launcher that starts a worker in its own session (as msrun does) and never returns: the time
    limit stops both, although the worker is in another process group."""
    launcher = fake_launcher(tmp_path, """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        with open("worker.pid", "w") as fh:
            fh.write(str(child.pid))
        time.sleep(600)
    """)
    token = "test-hang-" + str(os.getpid())
    start = time.monotonic()
    with pytest.raises(EPJobError, match=r"the 2-rank job did not finish within 3 s; stopped the job \(2 processes"):
        try:
            run_ep(2, launcher=launcher, timeout=3, job_token=token)
        except EPJobError as err:
            log_dir = re.search(r"logs in (\S+)$", str(err)).group(1)
            with open(os.path.join(log_dir, "worker.pid")) as fh:
                worker_pid = int(fh.read())
            remove_log_dir(str(err))
            raise
    assert time.monotonic() - start < 30
    assert job_processes(token) == []
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)


def test_worker_that_dies_stops_the_job(capsys):
    """A real msrun job where rank 1 raises after joining: rank 0 would wait in AllGather forever (and
    msrun's scheduler ~30 s for a heartbeat); the CLI sees the rank's error and stops everything."""
    before = set(p.pid for p in any_ep_job_processes())
    start = time.monotonic()
    code = ep_cli.main(["--world-size", "2", "--fail-rank", "1", "--repeats", "0", "--timeout", "240"])
    elapsed = time.monotonic() - start
    assert code == 2
    line = one_error_line(capsys)
    assert "rank 1 failed: RuntimeError: injected failure on rank 1 (--fail-rank 1)" in line
    assert "stopped the job" in line
    remove_log_dir(line)
    assert set(p.pid for p in any_ep_job_processes()) <= before
    assert elapsed < 200


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "ep.json"
    write_json(str(path), {"a": 1})
    assert path.read_text().strip().startswith("{")
    with pytest.raises(TypeError):
        write_json(str(path), {"a": object()})  # not serialisable: the old file stays whole
    assert path.read_text().count('"a": 1') == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ep.json"]


def test_module_entry_point_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "moe_lab", "ep", "--world-size", "5"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: world_size must divide num_experts=8 (each rank owns num_experts/world_size "
                                   "of them); got world_size=5, allowed: [1, 2, 4, 8]")


# ------------------------------------------------------------------------------ the report a learner reads
HAN = re.compile(r"[\u4e00-\u9fff]")


def _rank_row(rank, load, alltoall):
    return {"rank": rank, "experts": [4 * rank, 4 * rank + 4], "expert_load": load, "rows": sum(load),
            "padded_rows": 14 if alltoall else 0, "bytes_sent": 6400, "bytes_received": 6400,
            "alltoall_bytes": 5990 if alltoall else None, "collectives": [], "forward_seconds": 0.0515,
            "comm_seconds": 0.0398, "init_seconds": 1.0}


def synthetic_result():
    """What notebook 06's run returns, without running it: 2 ranks on the CPU, both strategies."""
    config = dict(world_size=2, tokens_per_rank=16, hidden_size=32, intermediate_size=64, num_experts=8, top_k=2,
                  scoring_func="sigmoid", n_shared_experts=1, routed_scaling_factor=2.5, n_group=1, topk_group=1,
                  seed=0, dtype="float32", repeats=2)
    ranks = {name: [_rank_row(0, [11, 8, 9, 13], name == "alltoall"), _rank_row(1, [6, 8, 4, 5], name == "alltoall")]
             for name in ("allgather", "alltoall")}
    return {"config": config, "world_size": 2, "launcher": "msrun", "device": "CPU", "job_seconds": 19.04,
            "ranks_reached": [15, 17],
            "strategies": {name: {"ranks": rows, "max_abs_error": 0.0} for name, rows in ranks.items()}}


def cell_columns(line, cells):
    """``(first, last)`` display column of each of ``cells``, found left to right in ``line``."""
    found, at = [], 0
    for cell in cells:
        i = line.index(cell, at)
        found.append((width(line[:i]), width(line[:i + len(cell)]) - 1))
        at = i + len(cell)
    return found


def assert_rows_line_up(text):
    """Right-aligned columns end, the experts column and the loads start, where their headers do."""
    headers = [_(column[0]) for column in ep_cli.COLUMNS + ep_cli.TIMING_COLUMNS] + [_("rows per expert")]
    lines = text.splitlines()
    rows = [ln for ln in lines if re.match(r"^ +\d  ", ln)]
    header_lines = [ln for ln in lines if ln.startswith(headers[0] + " ")]
    assert len(header_lines) == 2 and len(rows) == 4
    head = cell_columns(header_lines[0], headers)
    for row in rows:
        words = row.split()  # rank, 8 numbers, then the loads
        cells = cell_columns(row, [*words[:9], " ".join(words[9:])])
        for i, ((h_first, h_last), (c_first, c_last)) in enumerate(zip(head, cells, strict=True)):
            if i in (1, 9):  # the experts and the loads are left-aligned
                assert c_first == h_first, (row, headers[i])
            else:
                assert c_last == h_last, (row, headers[i])


def test_format_table_english_text_is_what_notebook_06_shows():
    text = format_table(synthetic_result(), timings=False, errors=False)
    assert text.splitlines()[:4] == [
        "expert parallelism on 2 ranks (msrun, device CPU): 8 experts, top-2, sigmoid router (weights x 2.5), "
        "1 shared expert; 16 tokens per rank, hidden_size 32, float32",
        "ranks holding each token's experts: 1 rank for 15 tokens, 2 ranks for 17 tokens",
        "strategy allgather: dispatch AllGather, combine AllReduce",
        "rank  experts  rows padded  sent KiB  recv KiB  AlltoAll KiB  rows per expert"]
    assert text.splitlines()[4] == "   0  0-3        41      0      6.25      6.25             -  11 8 9 13"
    assert "(emulated with AllGather on this device)" in text
    assert_rows_line_up(format_table(synthetic_result()))


def test_format_table_in_chinese_keeps_the_numbers_and_the_columns(zh):
    text = format_table(synthetic_result())
    lines = text.splitlines()
    assert lines[0].startswith("2 个 rank 上的专家并行（msrun，设备 CPU）：8 个专家，top-2，"
                               "sigmoid 路由器（权重 x 2.5），")
    assert "1 个共享专家" in lines[0] and "每个 rank 16 个 token，hidden_size 32，float32" in lines[0]
    assert lines[1].endswith("15 个 token 在 1 个 rank 上，17 个 token 在 2 个 rank 上")
    assert lines[2] == "策略 allgather：分发用 AllGather，合并用 AllReduce；max |EP - 单进程| = 0.0e+00"
    assert HAN.search(lines[3]) and "AlltoAll KiB" in lines[3]
    assert lines[-1] == "作业总耗时 19.0 s（含 3 个 MindSpore 进程的启动）"
    assert_rows_line_up(text)
    assert "51.50" in text and "11 8 9 13" in text


def test_block_strategy_and_simulation_texts_in_chinese(zh):
    grouped = dict(synthetic_result()["config"], n_group=4, topk_group=2, n_shared_experts=0, routed_scaling_factor=1.0)
    assert ep_cli.block_description(grouped) == ("8 个专家，top-2，sigmoid 路由器，专家分为 4 组，"
                                                 "每个 token 最多用 2 组，没有共享专家")
    cpu = Backend(name="cpu", device="CPU")
    a2 = Backend(name="ascend-fused", device="Ascend", soc="ascend910b", tier="fused")
    shape = dict(world_size=32, tokens_per_rank=256, top_k=8, num_experts=256, dtype="bfloat16")
    assert choose_strategy(cpu, hidden_size=32, **shape).reason.startswith("设备 CPU：MindSpore 在这里有 AllGather")
    assert choose_strategy(a2, hidden_size=7680, **shape).reason == (
        "HCCL AlltoAll；融合的 MoeDistributeDispatch 用不了：hidden_size=7680 须 <= 7168 且是 32 的倍数")
    line = summary_line(simulate(ep=32))
    assert line.startswith("每层：每个设备发送 930.0 MiB（77% 跨节点）") and "负载最大/平均" in line
