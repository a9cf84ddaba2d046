"""Backend detection (moe_lab.backend) with faked host signals: every tier, failing and hanging probes,
the MOE_LAB_BACKEND override, and the boards x operators table in data/ascend_ops.json."""

import re

import pytest

from moe_lab.ascend import backend as B
from moe_lab.ascend import ops_ref as ascend_ref
from moe_lab.i18n import set_language
from moe_lab.textfmt import width


def no_probe(timeout):
    raise AssertionError("the MindSpore probe must not run without a device node / when forced to cpu")


def fake_probe(soc, available=True, count=8):
    def probe(timeout):
        return B.ProbeResult(soc=soc, available=available, device_count=count, mindspore="2.10.0")
    return probe


BOARD = B.HostSignals(device_nodes=("/dev/davinci0",), npu_smi="/usr/local/bin/npu-smi",
                      cann_home="/usr/local/Ascend/ascend-toolkit/latest")
NOTHING = B.HostSignals()


# ------------------------------------------------------------------------------ host signals
def test_host_signals_from_a_fake_dev_dir(tmp_path):
    for name in ("davinci0", "davinci10", "davinci2", "davinci_manager", "devmm_svm"):
        (tmp_path / name).write_text("")
    signals = B.host_signals(str(tmp_path), env={"ASCEND_HOME_PATH": "/opt/cann"}, which=lambda _: None,
                             exists=lambda _: False)
    assert [p.rsplit("/", 1)[1] for p in signals.device_nodes] == ["davinci0", "davinci2", "davinci10"]
    assert signals.has_device and signals.cann_home == "/opt/cann" and signals.npu_smi is None
    found = B.host_signals(str(tmp_path), env={}, which=lambda _: None,
                           exists=lambda p: p == "/usr/local/sbin/npu-smi")
    assert found.npu_smi == "/usr/local/sbin/npu-smi" and found.cann_home is None


def test_host_signals_empty_dev_dir(tmp_path):
    signals = B.host_signals(str(tmp_path), env={}, which=lambda _: None, exists=lambda _: False)
    assert signals == B.HostSignals()
    assert "none" in signals.summary()


# ------------------------------------------------------------------------------ every tier
@pytest.mark.parametrize("soc, tier, dispatch, fused, dtype", [
    ("ascend910b", "fused", "fused", True, "float32"),          # Atlas 800T/800I A2 (float32: correct first)
    ("Ascend910B3", "fused", "fused", True, "float32"),         # raw aclrtGetSocName spelling
    ("ascend910_93", "fused", "fused", True, "float32"),        # Atlas A3
    ("ascend310p", "fp16-subset", "sorted", True, "float16"),   # Atlas 300I Duo
    ("ascend310b", "npu-basic", "sorted", False, None),         # Atlas 200I DK A2, Orange Pi AIpro
    ("ascend910", "npu-basic", "sorted", False, None),          # the old Atlas 800 (910A)
])
def test_each_tier_from_the_probed_soc(soc, tier, dispatch, fused, dtype):
    backend = B.detect_backend(env={}, signals=BOARD, probe=fake_probe(soc))
    assert backend.device == "Ascend" and backend.tier == tier and backend.name == f"ascend-{tier}"
    assert backend.default_dispatch == dispatch and backend.can_run_fused is fused
    assert backend.compute_dtype == dtype
    assert backend.soc == B.normalize_soc(soc) and backend.device_count == 8
    assert backend.soc in backend.describe()


def test_no_device_node_means_cpu_without_probing():
    backend = B.detect_backend(env={}, signals=NOTHING, probe=no_probe)
    assert (backend.device, backend.name, backend.soc, backend.default_dispatch) == ("CPU", "cpu", None, "sorted")
    assert "no /dev/davinci" in backend.reason


def test_cann_toolkit_without_device_is_not_a_board():
    signals = B.HostSignals(npu_smi=None, cann_home="/usr/local/Ascend/ascend-toolkit/latest")
    backend = B.detect_backend(env={}, signals=signals, probe=no_probe)
    assert backend.device == "CPU" and "CANN/npu-smi found" in backend.reason


@pytest.mark.parametrize("result, words", [
    (B.ProbeResult(error="RuntimeError: Device Ascend not exist."), "probe failed"),
    (B.ProbeResult(available=False), "cannot load its Ascend plugin"),
    (B.ProbeResult(available=True, soc=""), "no known Ascend SoC"),
])
def test_probe_problems_fall_back_to_cpu_or_raise_when_forced(result, words):
    backend = B.detect_backend(env={}, signals=BOARD, probe=lambda t: result)
    assert backend.device == "CPU" and words in backend.reason
    with pytest.raises(B.AscendUnavailableError, match=words):
        B.detect_backend(env={"MOE_LAB_BACKEND": "ascend"}, signals=BOARD, probe=lambda t: result)


@pytest.mark.parametrize("raw, short, tier", [
    ("Ascend910B", "ascend910", "npu-basic"),      # the old Atlas 800's 910 "B" part, not an A2
    ("Ascend910ProB", "ascend910", "npu-basic"),
    ("Ascend910A", "ascend910", "npu-basic"),
    ("Ascend910B2C", "ascend910b", "fused"),
    ("Ascend910B4-1", "ascend910b", "fused"),
    ("Ascend910_9391", "ascend910_93", "fused"),
    ("Ascend310P1", "ascend310p", "fp16-subset"),
    ("Ascend310B4", "ascend310b", "npu-basic"),
    ("ascend910b", "ascend910b", "fused"),         # MindSpore's own short name, what the probe reports
    ("Ascend950PR_9579", "ascend950pr_9579", "npu-basic"),
    ("", None, "cpu"),
])
def test_soc_names_map_exactly(raw, short, tier):
    assert B.normalize_soc(raw) == short and B.tier_of_soc(raw) == tier


def test_unusable_device_nodes_get_a_hint(tmp_path):
    for name in ("davinci0", "vdavinci3"):
        (tmp_path / name).write_text("")
    signals = B.host_signals(str(tmp_path), env={}, which=lambda _: None, exists=lambda _: False,
                             access=lambda p: False)
    assert [p.rsplit("/", 1)[1] for p in signals.device_nodes] == ["davinci0", "vdavinci3"]
    hint = signals.access_hint()
    assert "HwHiAiUser" in hint and "davinci_manager" in hint
    reports = []
    backend = B.detect_backend(env={}, signals=signals, probe=fake_probe("ascend910b", available=False),
                               report=reports.append)
    assert backend.device == "CPU" and "HwHiAiUser" in backend.reason and len(reports) == 1
    (tmp_path / "davinci_manager").write_text("")
    fine = B.host_signals(str(tmp_path), env={}, which=lambda _: None, exists=lambda _: False, access=lambda p: True)
    assert fine.access_hint() == ""


def test_device_count_failure_keeps_the_soc(tmp_path, monkeypatch):
    """The probe counts devices in its own try: a failing count must not throw a known SoC away."""
    fake = tmp_path / "mindspore"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "__version__ = '2.10.0'\n"
        "class _Ascend:\n"
        "    @staticmethod\n    def is_available(): return True\n"
        "    @staticmethod\n    def device_count(): raise RuntimeError('no driver query')\n"
        "class device_context:\n    ascend = _Ascend\n")
    (fake / "_c_expression.py").write_text(
        "class MSContext:\n    @staticmethod\n    def get_instance(): return MSContext()\n"
        "    def get_ascend_soc_version(self): return 'ascend910b'\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    result = B.probe_mindspore(timeout=60)
    assert (result.soc, result.available, result.device_count, result.error) == ("ascend910b", True, None, None)


def test_logs_are_quiet_on_a_cpu_and_not_on_a_board():
    from moe_lab.env import quiet_logs

    assert quiet_logs(NOTHING) and not quiet_logs(BOARD)


# ------------------------------------------------------------------------------ the real subprocess probe
def test_probe_that_hangs_is_cut_at_the_time_limit():
    result = B.probe_mindspore(timeout=0.5, code="import time; time.sleep(60)")
    assert result.error == ("the MindSpore probe did not answer within 0.5 s (raise MOE_LAB_PROBE_TIMEOUT on a slow "
                            "board)")
    hanging = lambda t: B.probe_mindspore(timeout=t, code="import time; time.sleep(60)")  # noqa: E731
    reports = []
    backend = B.detect_backend(env={}, signals=BOARD, probe=hanging, timeout=0.5, report=reports.append)
    assert reports == [f"running on the CPU: {backend.reason}"]  # a board that is not used is said so, once
    assert backend.device == "CPU" and "did not answer within 0.5 s" in backend.reason
    with pytest.raises(B.AscendUnavailableError, match="did not answer"):
        B.detect_backend(env={"MOE_LAB_BACKEND": "ascend"}, signals=BOARD, probe=hanging, timeout=0.5)


def test_probe_that_crashes_or_prints_garbage():
    crashed = B.probe_mindspore(timeout=30, code="import sys; sys.stderr.write('boom\\n'); sys.exit(3)")
    assert crashed.error == "the MindSpore probe exited with code 3: boom"
    garbage = B.probe_mindspore(timeout=30, code="print('hello')")
    assert "exited with code 0" in garbage.error
    missing = B.probe_mindspore(timeout=30, python="/nonexistent/python")
    assert missing.error.startswith("could not start the MindSpore probe")


def test_real_probe_on_this_machine_reports_no_ascend():
    result = B.probe_mindspore(timeout=120)
    if result.available:
        pytest.skip(f"this machine has a working Ascend plugin (SoC {result.soc!r}): "
                    "the CPU expectation does not apply")
    assert result.error is None and result.soc == "" and result.mindspore.startswith("2.")


# ------------------------------------------------------------------------------ MOE_LAB_BACKEND
def test_env_override_cpu_skips_the_board():
    backend = B.detect_backend(env={"MOE_LAB_BACKEND": "cpu"}, signals=BOARD, probe=no_probe)
    assert backend.device == "CPU" and backend.reason == "MOE_LAB_BACKEND=cpu"


@pytest.mark.parametrize("value", ["ascend", "ASCEND", " Ascend ", "auto", "", "Auto"])
def test_env_override_valid_spellings_on_a_board(value):
    backend = B.detect_backend(env={"MOE_LAB_BACKEND": value}, signals=BOARD, probe=fake_probe("ascend910b"))
    assert backend.device == "Ascend" and backend.tier == "fused"


@pytest.mark.parametrize("value", ["gpu", "npu", "1", "cpu,ascend", "emulate-910", "emulate"])
def test_env_override_invalid_values_are_refused(value):
    with pytest.raises(ValueError, match=r"MOE_LAB_BACKEND must be one of 'auto', 'cpu', 'ascend', 'emulate-910b', "
                                         r"'emulate-910_93', 'emulate-310p', 'emulate-310b'; got"):
        B.detect_backend(env={"MOE_LAB_BACKEND": value}, signals=BOARD, probe=no_probe)


@pytest.mark.parametrize("value, soc, tier", [("emulate-910b", "ascend910b", "fused"),
                                              ("EMULATE-310P", "ascend310p", "fp16-subset"),
                                              ("emulate-310b", "ascend310b", "npu-basic")])
def test_emulated_boards_never_probe(value, soc, tier):
    backend = B.detect_backend(env={"MOE_LAB_BACKEND": value}, signals=BOARD, probe=no_probe)
    assert backend.emulated and backend.device == "CPU" and (backend.soc, backend.tier) == (soc, tier)
    assert "emulated board" in backend.describe() and "ops_ref" in backend.reason


def test_probe_timeout_from_the_environment():
    assert B.probe_timeout({}) == 60.0
    assert B.probe_timeout({"MOE_LAB_PROBE_TIMEOUT": "180"}) == 180.0
    for bad in ("soon", "0", "-5"):
        with pytest.raises(ValueError, match="MOE_LAB_PROBE_TIMEOUT must be"):
            B.probe_timeout({"MOE_LAB_PROBE_TIMEOUT": bad})
    seen = []
    B.detect_backend(env={"MOE_LAB_PROBE_TIMEOUT": "7.5"}, signals=BOARD,
                     probe=lambda t: seen.append(t) or fake_probe("ascend910b")(t))
    assert seen == [7.5]


def test_forced_ascend_without_a_board_fails_at_once():
    with pytest.raises(B.AscendUnavailableError, match="MOE_LAB_BACKEND=ascend, but no /dev/davinci"):
        B.detect_backend(env={"MOE_LAB_BACKEND": "ascend"}, signals=NOTHING, probe=no_probe)


def test_bad_timeout_is_refused():
    with pytest.raises(ValueError, match="timeout must be > 0"):
        B.detect_backend(env={}, signals=BOARD, probe=no_probe, timeout=0)


def test_default_detection_on_this_machine_is_cached():
    first = B.detect_backend()
    assert first is B.detect_backend()
    assert first.device in ("CPU", "Ascend") and first.name
    assert B.current_backend().device in ("CPU", "Ascend")


def test_require_fused():
    a2 = B.detect_backend(env={}, signals=BOARD, probe=fake_probe("ascend910b"))
    assert B.require_fused(a2) is a2
    orange_pi = B.detect_backend(env={}, signals=BOARD, probe=fake_probe("ascend310b"))
    with pytest.raises(RuntimeError, match="dispatch='sorted'"):
        B.require_fused(orange_pi)
    with pytest.raises(RuntimeError, match="backend is cpu"):
        B.require_fused(B.CPU)


# ------------------------------------------------------------------------------ data/ascend_ops.json
def test_ops_table_agrees_with_the_tiers():
    table = B.load_ops_table()
    assert [b["soc"] for b in table["boards"]] == list(B.TABLE_SOCS)
    for board in table["boards"]:
        assert B.tier_of_soc(board["soc"]) == board["tier"]
        # a tier allows the fused path exactly when the table says its SoC has the three pipeline ops
        assert B.TIERS[board["tier"]]["fused"] == B.pipeline_supported(board["soc"], table)
    names = {op["operator"] for op in table["operators"]}
    assert set(B.PIPELINE_OPS) <= names


def test_ops_table_rows_have_sources_and_reference_functions():
    table = B.load_ops_table()
    allowed = {"yes", "no", "fp16", "unknown"}
    for op in table["operators"]:
        assert set(op["support"]) == set(B.TABLE_SOCS)
        assert set(op["support"].values()) <= allowed, op["operator"]
        assert op["sources"] and all(s in table["sources"] for s in op["sources"])
        if op["ascend_ref"] is not None:
            assert callable(getattr(ascend_ref, op["ascend_ref"]))
        assert op["support"]["ascend310b"] == "no"  # no MoE operator is registered for the 310B
    for board in table["boards"]:
        assert all(s in table["sources"] for s in board["sources"])
    assert all(src["where"] for src in table["sources"].values())


def test_ops_table_text_and_missing_file(tmp_path):
    text = B.ops_table_text()
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["operator", *B.TABLE_SOCS]
    assert len(lines) == 2 + len(B.load_ops_table()["operators"])
    with pytest.raises(FileNotFoundError, match="missing"):
        B.load_ops_table(tmp_path / "nope.json")


# ------------------------------------------------------------------------------ what a learner reads, in Chinese
def test_ops_table_columns_line_up_in_english_and_in_chinese(zh):
    """Every cell starts where its column's dashes start, counted in display columns (a Chinese character takes
    two), and the Chinese table says yes/no/unknown in Chinese."""
    for lang in ("en", "zh"):
        set_language(lang)
        lines = B.ops_table_text().splitlines()
        starts = [m.start() for m in re.finditer(r"-+", lines[1])]
        for line in [lines[0], *lines[2:]]:
            cells = list(re.finditer(r"\S+(?: \S+)*", line))  # cells are two or more spaces apart
            assert [width(line[:m.start()]) for m in cells] == starts[:len(cells)], line
    assert lines[0].startswith("算子") and lines[0].endswith("CPU 参考实现")
    fused_add = next(line for line in lines if line.startswith("FusedAddTopKDiv"))
    assert fused_add.split()[1:5] == ["支持", "未知", "未知", "不支持"]


def test_describe_reasons_and_host_summary_in_chinese(zh):
    a2 = B.emulated_backend("emulate-910b", env={})
    assert a2.describe().startswith("后端 emulate-910b：模拟板卡（MindSpore 运行在 CPU 上，使用参考算子），"
                                    "SoC ascend910b，级别 fused（Atlas A2/A3（Atlas 800T/800I A2、A3 服务器））；"
                                    "默认分发路径 'fused'，融合路径以 float32 计算；")
    reports = []
    locked = B.HostSignals(device_nodes=("/dev/davinci0",), unreadable=("/dev/davinci0",))
    backend = B.detect_backend(env={}, signals=locked, probe=fake_probe("", available=False), report=reports.append)
    assert backend.reason.startswith("找到了设备节点，但 MindSpore 无法加载它的昇腾插件")
    assert "当前用户无法打开 /dev/davinci0" in backend.reason and "usermod -aG HwHiAiUser $USER" in backend.reason
    assert reports == [f"在 CPU 上运行：{backend.reason}"]
    board = B.detect_backend(env={}, signals=BOARD, probe=fake_probe("Ascend910B3", count=8), report=reports.append)
    assert board.reason == "MOE_LAB_BACKEND=auto；1 个设备节点；MindSpore 2.10.0 报告 SoC 为 ascend910b"
    assert NOTHING.summary() == "设备节点：无；npu-smi：未找到；CANN：未设置"
