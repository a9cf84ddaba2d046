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

from moe_lab.parallel import cli as ep_cli
from moe_lab.parallel.cli import EPJobError, find_launcher, job_processes, run_ep, write_json

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
