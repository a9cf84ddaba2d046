"""python -m moe_lab budget: the table, --json, --config, and one-line errors with exit status 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moe_lab.budget.cli import main
from moe_lab.budget.count import count_parameters
from moe_lab.budget.spec import MODELS_DIR, load_model

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = ["--model", "openpangu-ultra-moe-718b", "--dtype", "bf16", "--device", "atlas-800i-a2",
            "--context", "32768", "--batch", "8"]


def _run(args):
    env = {**os.environ, "GLOG_v": "3"}
    return subprocess.run([sys.executable, "-m", "moe_lab", "budget", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_subprocess_headline_table_and_json():
    r = _run(HEADLINE)
    assert r.returncode == 0, r.stderr
    assert "devices to serve: 26 (4 nodes)" in r.stdout
    assert "70,272 B per token" in r.stdout and "routed_experts" in r.stdout
    j = _run([*HEADLINE, "--json"])
    data = json.loads(j.stdout)
    c = count_parameters(load_model("openpangu-ultra-moe-718b"))
    assert isinstance(data["total_params"], int) and isinstance(data["active_params"], int)
    assert (data["total_params"], data["active_params"]) == (c.total, c.active)


def test_subprocess_error_is_one_line_exit_2():
    r = _run(["--model", "nope"])
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "valid models: deepseek-moe-16b, deepseek-v2" in r.stderr


def test_in_process_json_and_config(capsys):
    assert main(["--config", str(MODELS_DIR / "mixtral-8x7b" / "config.json"), "--json", "--device", "h100-sxm"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["total_params"], data["active_params"]) == (46_702_792_704, 12_879_925_248)
    assert data["device"] == "h100-sxm" and data["decode_upper_bound"]["bound"] in ("memory", "compute")


def test_in_process_list_and_help(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "openpangu-ultra-moe-718b" in out and "mxfp4" in out and "atlas-300i-duo" in out
    assert main(["--help"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt5"], "unknown model 'gpt5'; valid models:"),
    (["--dtype", "int3"], "unknown dtype 'int3'; valid dtypes: fp32, bf16"),
    (["--kv-dtype", "int4"], "unknown kv dtype 'int4'"),
    (["--device", "tpu-v5"], "unknown device 'tpu-v5'; valid devices: a100-80gb"),
    (["--context", "-5"], "context must be >= 1, got -5"),
    (["--context", "0"], "context must be >= 1, got 0"),
    (["--batch", "0"], "batch must be >= 1, got 0"),
    (["--batch", "two"], "batch must be an integer"),
    (["--reserve", "1.5"], "reserve must be < 1"),
    (["--config", "/no/such/config.json"], "no config.json at"),
    (["--model", "kimi-k2", "--config", "x.json"], "not allowed with argument"),
])
def test_bad_input_one_line_exit_2(capsys, args, message):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_config_missing_a_field_names_it(tmp_path, capsys):
    cfg = json.loads((MODELS_DIR / "qwen3-30b-a3b" / "config.json").read_text())
    del cfg["moe_intermediate_size"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: config is missing the field 'moe_intermediate_size' (width of one routed expert)"
