"""python -m moe_lab budget: the table, --json, --config, and one-line errors with exit status 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moe_lab.budget.cli import main
from moe_lab.budget.count import count_parameters
from moe_lab.budget.memory import kv_growth
from moe_lab.budget.spec import MODELS_DIR, load_model
from moe_lab.budget.text import kv_growth_text, span
from moe_lab.textfmt import plural

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
    assert "devices to serve (ideal even sharding): 26 (4 nodes)" in r.stdout
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
    text = " ".join(capsys.readouterr().out.split())
    assert "The default model is openPangu-Ultra-MoE-718B" in text and "--devices" in text


def test_default_model_is_openpangu(capsys):
    assert main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "openpangu-ultra-moe-718b"


def test_roofline_reports_both_bounds_and_the_binding_one(capsys):
    assert main([*HEADLINE, "--devices", "32"]) == 0
    out = capsys.readouterr().out
    assert "decode on 32 devices, upper bounds (roofline):" in out
    assert "memory bandwidth: " in out and "compute (fp16 peak): " in out
    assert "(memory-bound)" in out
    assert main([*HEADLINE, "--devices", "32", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["decode_upper_bound"]
    assert d["tokens_per_second"][1] == min(d["memory_tokens_per_second"][1], d["compute_tokens_per_second"][1])


def test_a_huge_batch_is_refused_on_given_devices_and_warned_about_otherwise(capsys):
    assert main(["--batch", "100000000", "--devices", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: batch must be <= ") and "32 x atlas-800i-a2" in err and err.endswith("got 100000000")
    assert main(["--batch", "100000000"]) == 0
    out = capsys.readouterr().out
    assert "warning: the KV cache and workspace of 100,000,000 sequences" in out
    assert "compute-bound" in out  # the compute bound binds long before bandwidth


def test_span_and_plural_never_print_a_range_of_one_value():
    assert span(116.64, 116.61, 1) == "116.6"
    assert span(836.3, 1115.1) == "836-1,115"
    assert plural(1, "node") == "1 node" and plural(4, "node") == "4 nodes" and plural(1000, "device") == \
        "1,000 devices"
    assert kv_growth_text(kv_growth(load_model("openpangu-ultra-moe-718b"))) == "70,272 B per token"


def test_gpt_oss_kv_line_says_the_sliding_layers_stop_growing(capsys):
    assert main(["--model", "gpt-oss-120b", "--context", "32768", "--device", "h100-sxm"]) == 0
    out = capsys.readouterr().out
    assert "(73,728 B per token up to 128 tokens, then 36,864 B)" in out and "1 node)" in out


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
    (["--context", "200000"], "context must be <= 131072 (max_position_embeddings of openpangu-ultra-moe-718b), "
                              "got 200000"),
    (["--devices", "0"], "devices must be >= 1, got 0"),
    (["--devices", "8"], "batch cannot be served on 8 x atlas-800i-a2"),
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


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00\x81 binary", b"[1, 2, 3]"])
def test_an_undecodable_config_file_is_named(tmp_path, capsys, content):
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    assert main(["--config", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and "broken.json" in lines[0] and "Traceback" not in lines[0]
