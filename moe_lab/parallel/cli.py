"""``python -m moe_lab ep --world-size N``: run the expert-parallel layer under msrun and report.

Introduced in notebook 06 (``make ep`` runs 2 and 4 ranks). ``run_ep`` is the same thing as a function
(the notebook calls it). What it does:

1. checks the arguments (a world size that does not divide the experts is refused before anything starts);
2. finds the launcher: ``msrun`` next to this Python or on ``PATH``, else
   ``python -m mindspore.parallel.cluster.run`` (the same program); ``--launcher`` overrides;
3. starts ``launcher --worker_num=N ... python -m moe_lab.parallel.worker ...`` in its own session, on a
   free port, with logs and results in a fresh temporary directory, and waits with a time limit;
4. stops the whole job at the first sign of failure: a rank's error file, the launcher reporting a dead
   worker, or the time limit. Every process of the job carries the environment variable
   ``MOE_LAB_EP_JOB=<token>``; cleanup kills exactly those processes (and their process groups, since
   msrun starts each worker in a new session), so nothing is left behind;
5. collects the ranks' JSON, checks the output against a single-process ``MoELayer`` with the same
   weights, prints a table and, with ``--out``, writes the summary JSON (temp file, then rename).

Bad input, a missing launcher, a worker that dies or a job that hangs: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil  # a MindSpore dependency (its launcher uses it)
from mindspore import Tensor

from moe_lab.ascend.backend import detect_backend, set_device
from moe_lab.checks import check_choice, check_float, check_int
from moe_lab.i18n import N_, _
from moe_lab.parallel.layer import choose_strategy, fused_dispatch_violations
from moe_lab.parallel.worker import (
    WorkerConfig,
    add_layer_arguments,
    build_layer,
    check_config,
    config_from_arguments,
    layer_arguments,
    make_tokens,
)
from moe_lab.textfmt import counted, ljust, rjust, width

JOB_ENV = "MOE_LAB_EP_JOB"
LAUNCHER_MODULE = "mindspore.parallel.cluster.run"
STRATEGY_CHOICES = ("auto", "all", "allgather", "alltoall", "fused")
POLL_SECONDS = 0.2


class EPJobError(RuntimeError):
    """The distributed job failed, hung or could not start (one line, for the CLI)."""


# ---------------------------------------------------------------------------------------------
# Launcher, port, processes


def find_launcher(launcher: str | None = None, path: str | None = None) -> list[str]:
    """The command that starts an msrun job, as an argv prefix.

    ``launcher=None``: ``msrun`` next to this interpreter (a venv's bin) or on ``PATH``; failing that,
    ``python -m mindspore.parallel.cluster.run`` if MindSpore is importable. A name is looked up on
    ``path`` (default ``$PATH``); a path must be an executable file. Missing: ``FileNotFoundError``.
    """
    path = os.environ.get("PATH", "") if path is None else path
    if launcher is None:
        sibling = os.path.join(os.path.dirname(sys.executable), "msrun")
        if os.access(sibling, os.X_OK):
            return [sibling]
        found = shutil.which("msrun", path=path)
        if found:
            return [found]
        if importlib.util.find_spec("mindspore") is not None:
            return [sys.executable, "-m", LAUNCHER_MODULE]
        raise FileNotFoundError("msrun (MindSpore's launcher) was not found and MindSpore is not installed; "
                                "install mindspore==2.10.0 (make install)")
    if os.sep in launcher:
        if os.path.isfile(launcher) and os.access(launcher, os.X_OK):
            return [launcher]
        raise FileNotFoundError(f"launcher {launcher!r} does not exist or is not executable")
    found = shutil.which(launcher, path=path)
    if not found:
        raise FileNotFoundError(f"launcher {launcher!r} was not found on PATH; install MindSpore (it provides "
                                "msrun) or pass --launcher /path/to/msrun")
    return [found]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (for msrun's scheduler)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_processes(token: str) -> list:
    """Every live process whose environment carries ``MOE_LAB_EP_JOB=token`` (the job's processes)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(JOB_ENV) == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_job(launcher_proc: subprocess.Popen | None, token: str, timeout: float = 10.0) -> int:
    """Kill the launcher's process group and every process of the job (by token); return how many died."""
    victims = job_processes(token)
    own_group = os.getpgrp()
    groups = set()
    for p in victims:
        try:
            groups.add(os.getpgid(p.pid))
        except (ProcessLookupError, PermissionError):
            pass
    if launcher_proc is not None and launcher_proc.poll() is None:
        groups.add(launcher_proc.pid)  # start_new_session=True: its pid is its group id
    for group in groups - {own_group}:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in victims:  # anything that shared our group (should not happen) is killed by pid
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=timeout)
    if launcher_proc is not None:
        try:
            launcher_proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    return len(victims)


# ---------------------------------------------------------------------------------------------
# Running the job


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _worker_failure(log_dir: str) -> str | None:
    """The first failure a rank reported (its error file), else the last exception line of a worker log."""
    for path in sorted(glob.glob(os.path.join(log_dir, "rank_*.error.json"))):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            return f"rank {data['rank']} failed: {data['error']}"
        except (OSError, ValueError, KeyError):
            continue
    for path in sorted(glob.glob(os.path.join(log_dir, "worker_*.log"))):
        lines = [ln for ln in _read(path).splitlines() if re.match(r"^[A-Za-z_.]*(Error|Exception|Killed)\b", ln)]
        if lines:
            rank = re.sub(r"\D", "", os.path.basename(path))
            return f"rank {rank} failed: {lines[-1].strip()[:300]}"
    return None


def _dead_worker_code(launcher_log: str) -> int | None:
    m = re.search(r"Worker process \d+ exit with exception\. Error code: (-?\d+)", launcher_log)
    return int(m.group(1)) if m else None


def _launch(cmd: list[str], env: dict, log_dir: str, timeout: float, token: str, world_size: int) -> float:
    """Run the job; return its wall time, or raise EPJobError after stopping every process of it."""
    launcher_log = os.path.join(log_dir, "launcher.log")
    start = time.perf_counter()
    deadline = start + timeout
    with open(launcher_log, "w", encoding="utf-8") as fh:
        try:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=log_dir, start_new_session=True)
        except OSError as err:
            raise EPJobError(f"could not start the launcher {cmd[0]!r}: {err}") from None
    problem = None
    try:
        while True:
            try:
                proc.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            failure = _worker_failure(log_dir) if glob.glob(os.path.join(log_dir, "rank_*.error.json")) else None
            code = _dead_worker_code(_read(launcher_log))
            if failure or code is not None:
                time.sleep(0.5)  # let the dying rank finish writing its log
                problem = failure or _worker_failure(log_dir) or f"a worker exited with code {code}"
                break
            if time.perf_counter() > deadline:
                problem = f"the {world_size}-rank job did not finish within {timeout:g} s"
                break
    finally:
        killed = kill_job(proc, token)
    seconds = time.perf_counter() - start
    if problem is None and proc.returncode != 0:
        problem = _worker_failure(log_dir)
        if problem is None:
            tail = [ln for ln in _read(launcher_log).splitlines() if ln.strip()][-1:] or ["no output"]
            problem = f"the launcher exited with code {proc.returncode}: {tail[0].strip()[:300]}"
    if problem is not None:
        stopped = f"; stopped the job ({killed} processes killed)" if killed else ""
        raise EPJobError(f"{problem}{stopped}; logs in {log_dir}")
    return seconds


def _strategies_for(strategy: str, choice, fused_ok: bool) -> list[str]:
    if strategy == "auto":
        return [choice.strategy]
    if strategy == "all":
        return ["allgather", "alltoall"] + (["fused"] if fused_ok else [])
    if strategy == "fused" and not fused_ok:
        raise ValueError(f"strategy 'fused' needs MoeDistributeDispatch on Atlas A2/A3 within its limits; "
                         f"here: {choice.reason}")
    return [strategy]


def run_ep(world_size: int = 2, *, tokens_per_rank: int = 16, hidden_size: int = 32, intermediate_size: int = 64,
           num_experts: int = 8, top_k: int = 2, scoring_func: str = "softmax", n_shared_experts: int = 0,
           routed_scaling_factor: float = 1.0, n_group: int = 1, topk_group: int = 1, seed: int = 0,
           strategy: str = "auto", repeats: int = 3, timeout: float = 300.0, launcher: str | None = None,
           fail_rank: int | None = None, verify: bool = True, keep_logs: bool = False,
           job_token: str | None = None) -> dict:
    """Run the expert-parallel MoE layer on ``world_size`` msrun workers; return the summary dict.

    The layer is ``MoELayer(hidden_size, intermediate_size, num_experts, top_k, scoring_func=...,
    n_shared_experts=..., routed_scaling_factor=..., n_group=..., topk_group=..., seed=seed)`` on every rank.
    ``strategy``: ``"auto"`` (chosen from the backend), ``"all"`` (every strategy this backend runs),
    or one of ``moe_lab.parallel.layer.STRATEGIES``. ``fail_rank`` makes that rank raise (tests).
    ``job_token`` tags the job's processes (default: random); tests use it to look for orphans.
    Raises ``ValueError``/``TypeError`` on bad input, ``FileNotFoundError`` without a launcher,
    ``EPJobError`` when the job fails or exceeds ``timeout`` seconds (the job is stopped first).
    """
    world_size = check_int("world_size", world_size, minimum=1)
    experts = check_int("num_experts", num_experts, minimum=1)
    if experts % world_size:
        divisors = [d for d in range(1, experts + 1) if experts % d == 0]
        raise ValueError(f"world_size must divide num_experts={experts} (each rank owns num_experts/world_size of "
                         f"them); got world_size={world_size}, allowed: {divisors}")
    cfg = check_config(WorkerConfig(
        tokens_per_rank=tokens_per_rank, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_experts=experts, top_k=top_k, scoring_func=scoring_func, n_shared_experts=n_shared_experts,
        seed=seed, routed_scaling_factor=routed_scaling_factor, n_group=n_group, topk_group=topk_group))
    repeats = check_int("repeats", repeats, minimum=0)
    timeout = check_float("timeout", timeout, minimum=0.0, strict=True)
    check_choice("strategy", strategy, STRATEGY_CHOICES)
    if fail_rank is not None:
        fail_rank = check_int("fail_rank", fail_rank, minimum=0, maximum=world_size - 1)
    backend = detect_backend()
    dtype = "float32"
    shape = dict(world_size=world_size, hidden_size=cfg.hidden_size, tokens_per_rank=cfg.tokens_per_rank,
                 top_k=cfg.top_k, num_experts=experts, dtype=dtype)
    choice = choose_strategy(backend, **shape)
    fused_ok = backend.device == "Ascend" and not fused_dispatch_violations(backend.soc, **shape)
    strategies = _strategies_for(strategy, choice, fused_ok)
    cmd_prefix = find_launcher(launcher)

    token = job_token or secrets.token_hex(8)
    log_dir = tempfile.mkdtemp(prefix="moe_lab_ep_")
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env.update({
        JOB_ENV: token,
        "GLOG_v": "3",
        # msrun starts workers as plain "python": make it this interpreter, with moe_lab importable
        "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        "PYTHONPATH": package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        # workers retry registering with the scheduler every 3-5 s by default; 1-2 s halves start-up
        "MS_RETRY_INTERVAL_LOWER": env.get("MS_RETRY_INTERVAL_LOWER", "1"),
        "MS_RETRY_INTERVAL_UPPER": env.get("MS_RETRY_INTERVAL_UPPER", "2"),
    })
    cmd = cmd_prefix + [
        f"--worker_num={world_size}", f"--local_worker_num={world_size}", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", "--join=True", f"--log_dir={log_dir}",
        f"--cluster_time_out={max(int(timeout), 1)}",
        "python", "-m", "moe_lab.parallel.worker", "--out-dir", log_dir, *layer_arguments(cfg),
        "--strategies", ",".join(strategies), "--repeats", str(repeats),
    ] + ([] if fail_rank is None else ["--fail-rank", str(fail_rank)])
    job_seconds = _launch(cmd, env, log_dir, timeout, token, world_size)

    ranks = []
    for r in range(world_size):
        path = os.path.join(log_dir, f"rank_{r}.json")
        if not os.path.exists(path):
            raise EPJobError(f"rank {r} wrote no result although the job succeeded; logs in {log_dir}")
        with open(path, encoding="utf-8") as fh:
            ranks.append(json.load(fh))
    config = dict(world_size=world_size, tokens_per_rank=cfg.tokens_per_rank, hidden_size=cfg.hidden_size,
                  intermediate_size=cfg.intermediate_size, num_experts=experts, top_k=cfg.top_k,
                  scoring_func=cfg.scoring_func, n_shared_experts=cfg.n_shared_experts,
                  routed_scaling_factor=cfg.routed_scaling_factor, n_group=cfg.n_group, topk_group=cfg.topk_group,
                  seed=cfg.seed, dtype=dtype, repeats=repeats)
    result = summarize(ranks, config,
                       launcher=" ".join(os.path.basename(c) for c in cmd_prefix), choice=choice,
                       job_seconds=job_seconds)
    if verify:
        reference = single_process_output(result["config"])
        for s in result["strategies"].values():
            s["max_abs_error"] = float(np.abs(np.asarray(s["output"], np.float32) - reference).max())
    if not keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        result["log_dir"] = log_dir
    return result


def summarize(ranks: list[dict], config: dict, *, launcher: str, choice, job_seconds: float) -> dict:
    """Merge the per-rank JSON into one summary: per strategy, the global output and a row per rank."""
    ranks = sorted(ranks, key=lambda d: d["rank"])
    first = ranks[0]
    strategies = {}
    for name in first["strategies"]:
        rows = []
        for d in ranks:
            s = d["strategies"][name]
            rows.append({"rank": d["rank"], "experts": d["experts"], "expert_load": s["expert_load"],
                         "rows": s["rows_processed"], "padded_rows": s["padded_rows"],
                         "bytes_sent": s["bytes_sent"], "bytes_received": s["bytes_received"],
                         "alltoall_bytes": s["alltoall_bytes"], "collectives": s["collectives"],
                         "forward_seconds": s["forward_seconds"], "comm_seconds": s["comm_seconds"],
                         "init_seconds": d["init_seconds"]})
        output = [row for d in ranks for row in d["strategies"][name]["output"]]
        strategies[name] = {"ranks": rows, "output": output,
                            "expert_load": [c for row in rows for c in row["expert_load"]]}
    # the routing is the same for every strategy: how many ranks each token's experts live on, all ranks summed
    name = next(iter(first["strategies"]))
    reached = np.sum([d["strategies"][name]["ranks_reached"] for d in ranks], axis=0).astype(int).tolist()
    return {"config": config, "world_size": len(ranks), "launcher": launcher, "backend": first["backend"],
            "device": first["device"], "mindspore": first["mindspore"], "auto_strategy": choice.strategy,
            "auto_reason": choice.reason, "job_seconds": job_seconds, "ranks_reached": reached,
            "strategies": strategies}


def single_process_output(config: dict) -> np.ndarray:
    """The same layer and tokens in this process, without expert parallelism (``MoELayer``, sorted path)."""
    set_device(detect_backend().device)
    cfg = config_of(config)
    x = make_tokens(cfg.tokens_per_rank * config["world_size"], cfg.hidden_size, cfg.seed)
    return build_layer(cfg)(Tensor(x), dispatch="sorted").asnumpy()


def config_of(config: dict) -> WorkerConfig:
    """The ``WorkerConfig`` of a summary's ``config`` (the layer and tokens the ranks used)."""
    fields = WorkerConfig.__dataclass_fields__
    return WorkerConfig(**{k: v for k, v in config.items() if k in fields})


# ---------------------------------------------------------------------------------------------
# Reporting

DESCRIPTIONS = {"allgather": N_("dispatch AllGather, combine AllReduce"),
                "alltoall": N_("counts AllGather, dispatch and combine AlltoAll"),
                "fused": "MoeDistributeDispatch / MoeDistributeCombine"}


def expert_span(first: int, last: int) -> str:
    """The experts ``[first, last)`` as a learner writes them: ``4-7``, or ``4`` for a single one."""
    return str(first) if last - first == 1 else f"{first}-{last - 1}"


def block_description(c: dict) -> str:
    """The block in words: experts, top-k, router, groups, shared experts (in the package's language)."""
    if c.get("routed_scaling_factor", 1.0) != 1.0:
        router = _("{scoring_func} router (weights x {scale})").format(
            scoring_func=c["scoring_func"], scale=f"{c['routed_scaling_factor']:g}")
    else:
        router = _("{scoring_func} router").format(scoring_func=c["scoring_func"])
    if c.get("n_group", 1) > 1:
        router = counted(c["topk_group"], N_("{router}, experts in {n_group} groups, at most {n} group per token"),
                         N_("{router}, experts in {n_group} groups, at most {n} groups per token"),
                         router=router, n_group=c["n_group"])
    shared = c["n_shared_experts"]
    shared_text = (counted(shared, N_("{n} shared expert"), N_("{n} shared experts")) if shared
                   else _("no shared expert"))
    return _("{num_experts} experts, top-{top_k}, {router}, {shared}").format(
        num_experts=c["num_experts"], top_k=c["top_k"], router=router, shared=shared_text)


# The columns of a strategy's table: (header, display width, right-aligned). A translated header wider than its
# column widens the column (display width: a Chinese character takes two columns), so the rows stay aligned.
COLUMNS = ((N_("rank"), 4, True), (N_("experts"), 8, False), (N_("rows"), 5, True), (N_("padded"), 7, True),
           (N_("sent KiB"), 10, True), (N_("recv KiB"), 10, True), ("AlltoAll KiB", 14, True))
TIMING_COLUMNS = ((N_("forward ms"), 12, True), (N_("in comm ms"), 12, True))


def _column_widths(columns) -> list[int]:
    """Each column's width: its English width, or its translated header and one space, if that is wider."""
    return [max(size, width(_(header)) + (i > 0)) for i, (header, size, _right) in enumerate(columns)]


def format_table(result: dict, timings: bool = True, errors: bool = True) -> str:
    """The report as text: one block per strategy, one row per rank (in the package's language).

    ``timings=False`` leaves out every time and ``errors=False`` the float error against one process, so
    that the text is the same on every run (what a notebook's checked cell prints).
    """
    c = result["config"]
    lines = [counted(result["world_size"],
                     N_("expert parallelism on {n} rank ({launcher}, device {device}): {block}; {tokens} tokens per "
                        "rank, hidden_size {hidden_size}, {dtype}"),
                     N_("expert parallelism on {n} ranks ({launcher}, device {device}): {block}; {tokens} tokens per "
                        "rank, hidden_size {hidden_size}, {dtype}"),
                     launcher=result["launcher"], device=result["device"], block=block_description(c),
                     tokens=c["tokens_per_rank"], hidden_size=c["hidden_size"], dtype=c["dtype"])]
    if result.get("ranks_reached"):
        spread = _(", ").join(
            _("{ranks} for {tokens}").format(ranks=counted(j + 1, N_("{n} rank"), N_("{n} ranks")),
                                             tokens=counted(count, N_("{n} token"), N_("{n} tokens")))
            for j, count in enumerate(result["ranks_reached"]) if count)
        lines.append(_("ranks holding each token's experts: {spread}").format(spread=spread))
    columns = COLUMNS + (TIMING_COLUMNS if timings else ())
    widths = _column_widths(columns)

    def row_text(cells) -> str:  # the rank, two spaces, then the other columns (each pads itself)
        parts = [(rjust if column[2] else ljust)(cell, w) for cell, w, column in zip(cells, widths, columns,
                                                                                      strict=True)]
        return parts[0] + "  " + "".join(parts[1:])

    for name, s in result["strategies"].items():
        how = _(DESCRIPTIONS[name])
        if name == "alltoall" and result["device"] != "Ascend":
            how = _("{how} (emulated with AllGather on this device)").format(how=how)
        if errors and "max_abs_error" in s:
            lines.append(_("strategy {name}: {how}; max |EP - single process| = {error}").format(
                name=name, how=how, error=f"{s['max_abs_error']:.1e}"))
        else:
            lines.append(_("strategy {name}: {how}").format(name=name, how=how))
        lines.append(row_text([_(column[0]) for column in columns]) + "  " + _("rows per expert"))
        for row in s["ranks"]:
            first, last = row["experts"]
            cells = [f"{row['rank']}", expert_span(first, last), f"{row['rows']}", f"{row['padded_rows']}",
                     f"{row['bytes_sent'] / 1024:.2f}", f"{row['bytes_received'] / 1024:.2f}",
                     "-" if row["alltoall_bytes"] is None else f"{row['alltoall_bytes'] / 1024:.2f}"]
            if timings:
                fwd = row["forward_seconds"]
                cells += [f"{fwd * 1e3 if fwd is not None else float('nan'):.2f}", f"{row['comm_seconds'] * 1e3:.2f}"]
            lines.append(f"{row_text(cells)}  {' '.join(map(str, row['expert_load']))}")
    if timings:
        lines.append(_("job wall time {seconds} s (start-up of {processes} MindSpore processes included)").format(
            seconds=f"{result['job_seconds']:.1f}", processes=result["world_size"] + 1))
    return "\n".join(lines)


def write_json(path: str, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--out folder {folder!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".ep_", suffix=".json.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message + SystemExit
        raise ValueError(message)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m moe_lab ep", description="Expert-parallel MoE layer on N msrun workers.")
    p.add_argument("--world-size", type=int, default=2, help="number of worker processes (ranks)")
    add_layer_arguments(p)
    p.add_argument("--strategy", default="auto", help=f"one of {', '.join(STRATEGY_CHOICES)}")
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes per strategy (median)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before the whole job is stopped")
    p.add_argument("--launcher", default=None, help="msrun command or path (default: found automatically)")
    p.add_argument("--out", default=None, help="write the summary JSON here")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--fail-rank", type=int, default=None, help=argparse.SUPPRESS)  # tests: inject a failure
    try:
        a = p.parse_args(sys.argv[1:] if argv is None else argv)
        if a.out and not os.path.isdir(os.path.dirname(os.path.abspath(a.out))):
            raise FileNotFoundError(f"--out folder {os.path.dirname(os.path.abspath(a.out))!r} does not exist")
        cfg = config_from_arguments(a)
        result = run_ep(a.world_size, tokens_per_rank=cfg.tokens_per_rank, hidden_size=cfg.hidden_size,
                        intermediate_size=cfg.intermediate_size, num_experts=cfg.num_experts, top_k=cfg.top_k,
                        scoring_func=cfg.scoring_func, n_shared_experts=cfg.n_shared_experts,
                        routed_scaling_factor=cfg.routed_scaling_factor, n_group=cfg.n_group,
                        topk_group=cfg.topk_group, seed=cfg.seed, strategy=a.strategy, repeats=a.repeats,
                        timeout=a.timeout, launcher=a.launcher, fail_rank=a.fail_rank, keep_logs=a.keep_logs)
        print(format_table(result))
        if a.out:
            write_json(a.out, result)
            print(f"summary written to {a.out}")
    except (ValueError, TypeError, FileNotFoundError, EPJobError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
