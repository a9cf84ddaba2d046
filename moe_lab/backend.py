"""Which hardware runs the course: a CPU, or an Atlas board (and which one). Decided once, by detection.

Introduced in notebook 07 (``moe_lab.setup`` calls ``detect_backend()`` from notebook 01 on).

Why detection and not ``try: <Ascend op> except: <CPU path>``: on a CPU MindSpore's Ascend-only MoE
operators import fine, then either fail *late* (the error surfaces at the next unrelated op and poisons
it) or, like ``GroupedMatmul``, return an empty tuple without any error (measured:
measured with MindSpore 2.10 on CPU; notebook 07). So the backend is chosen before any such op is called:

1. ``MOE_LAB_BACKEND`` = ``auto`` (default), ``cpu`` or ``ascend``;
2. cheap host checks: ``/dev/davinci<N>`` device nodes (the driver creates them; a container must pass
   them through), ``npu-smi``, the CANN environment (``ASCEND_HOME_PATH``, ...);
3. only if a device node exists: a subprocess asks MindSpore for the SoC name (in a subprocess so that
   ACL is not initialised in this process, the vllm-mindspore pattern), with a time limit;
4. the SoC picks a tier:

   ====================  =================================  =========================================
   SoC                   boards                             what runs
   ====================  =================================  =========================================
   ascend910b            Atlas 800T/800I A2 (Atlas A2)      ``fused``: every fused MoE op, bf16
   ascend910_93          Atlas A3                           ``fused``
   ascend310p            Atlas 300I Duo / Pro               ``fp16-subset``: MoeInitRoutingV2,
                                                            GroupedMatmul (fp16), MoeTokenUnpermute
   ascend310b            Atlas 200I DK A2, Orange Pi AIpro  ``npu-basic``: no fused MoE op; ordinary
                                                            ops on the NPU (the "sorted" path)
   other ascend SoCs     Atlas 800 (910A), Atlas 200 DK...  ``npu-basic``
   (none)                laptop, CI                         ``cpu``
   ====================  =================================  =========================================

Every function takes its host signals as arguments (device directory, environment, ``which``, the
probe), so ``tests/test_backend.py`` fakes each tier, a probe that fails and one that hangs.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from moe_lab._checks import check_choice, check_float

BACKEND_ENV = "MOE_LAB_BACKEND"
BACKEND_CHOICES = ("auto", "cpu", "ascend")
PROBE_TIMEOUT_S = 60.0  # importing MindSpore on a small board (Orange Pi AIpro) can take tens of seconds

# tier -> (label of the boards, fused pipeline allowed, compute dtype of the fused path, ops it has)
TIERS = {
    "fused": dict(boards="Atlas A2/A3 (Atlas 800T/800I A2, A3 servers)", fused=True, dtype="bfloat16"),
    "fp16-subset": dict(boards="Atlas 300I Duo/Pro (Ascend 310P)", fused=True, dtype="float16"),
    "npu-basic": dict(boards="Atlas 200I DK A2 / Orange Pi AIpro (Ascend 310B) or older Ascend",
                      fused=False, dtype=None),
    "cpu": dict(boards="no Ascend NPU", fused=False, dtype=None),
}
# The operators of the fused pipeline (MoeInitRoutingV2 -> GroupedMatmulV4 -> MoeTokenUnpermute) that
# each tier registers, from data/ascend_ops.json (tests check the two agree).
PIPELINE_OPS = ("MoeInitRoutingV2", "GroupedMatmulV4", "MoeTokenUnpermute")

# aclrtGetSocName -> MindSpore's short SoC name (mindspore ascend_device_context.cc SetContextSocVersion)
_SOC_PATTERNS = (
    (re.compile(r"^ascend910_?93"), "ascend910_93"),
    (re.compile(r"^ascend910b"), "ascend910b"),
    (re.compile(r"^ascend310p"), "ascend310p"),
    (re.compile(r"^ascend310b"), "ascend310b"),
    (re.compile(r"^ascend\w+"), None),  # another Ascend SoC: keep its own name
)
_SOC_TIER = {"ascend910_93": "fused", "ascend910b": "fused", "ascend310p": "fp16-subset",
             "ascend310b": "npu-basic"}


@dataclass(frozen=True)
class Backend:
    """The detected backend. ``device`` is MindSpore's device target (``"CPU"`` or ``"Ascend"``)."""

    name: str  # "cpu" or "ascend-<tier>"
    device: str  # "CPU" | "Ascend"
    soc: str | None = None  # MindSpore's SoC name, e.g. "ascend910b"; None on CPU
    tier: str = "cpu"  # a key of TIERS
    reason: str = ""  # how it was decided (shown by notebook 07)
    device_count: int | None = None

    @property
    def boards(self) -> str:
        return TIERS[self.tier]["boards"]

    @property
    def can_run_fused(self) -> bool:
        """Whether the compiled MoeInitRoutingV2 / GroupedMatmulV4 / MoeTokenUnpermute exist here."""
        return bool(TIERS[self.tier]["fused"])

    @property
    def compute_dtype(self) -> str | None:
        """The dtype the fused path computes in: bf16 on A2/A3, fp16 on 310P (no bf16 there)."""
        return TIERS[self.tier]["dtype"]

    @property
    def default_dispatch(self) -> str:
        """``"fused"`` on Atlas A2/A3, ``"sorted"`` everywhere else (310P runs fused only on request)."""
        return "fused" if self.tier == "fused" else "sorted"

    def describe(self) -> str:
        soc = self.soc or "-"
        return (f"backend {self.name}: device {self.device}, SoC {soc}, tier {self.tier} ({self.boards}); "
                f"default dispatch {self.default_dispatch!r}; {self.reason}")


CPU = Backend(name="cpu", device="CPU", reason="default")


@dataclass(frozen=True)
class HostSignals:
    """What the host shows without importing MindSpore (cheap, safe, no ACL initialisation)."""

    device_nodes: tuple[str, ...] = ()  # /dev/davinci0, /dev/davinci1, ... (not davinci_manager)
    npu_smi: str | None = None  # path of npu-smi, if installed
    cann_home: str | None = None  # ASCEND_HOME_PATH / ASCEND_TOOLKIT_HOME, if set
    extra: dict = field(default_factory=dict)

    @property
    def has_device(self) -> bool:
        return bool(self.device_nodes)

    def summary(self) -> str:
        nodes = ", ".join(self.device_nodes) if self.device_nodes else "none"
        return f"device nodes: {nodes}; npu-smi: {self.npu_smi or 'not found'}; CANN: {self.cann_home or 'not set'}"


NPU_SMI_PATHS = ("/usr/local/bin/npu-smi", "/usr/local/sbin/npu-smi")


def host_signals(dev_dir: str = "/dev", env: Mapping[str, str] | None = None,
                 which: Callable[[str], str | None] = shutil.which,
                 exists: Callable[[str], bool] = os.path.exists) -> HostSignals:
    """Collect the cheap host signals. Every source can be replaced (tests use a temporary dev_dir)."""
    env = os.environ if env is None else env
    nodes = [p for p in glob.glob(os.path.join(dev_dir, "davinci*"))
             if re.fullmatch(r"davinci\d+", os.path.basename(p))]
    nodes.sort(key=lambda p: int(os.path.basename(p)[len("davinci"):]))
    npu_smi = which("npu-smi") or next((p for p in NPU_SMI_PATHS if exists(p)), None)
    cann_home = env.get("ASCEND_HOME_PATH") or env.get("ASCEND_TOOLKIT_HOME") or None
    return HostSignals(tuple(nodes), npu_smi, cann_home)


@dataclass(frozen=True)
class ProbeResult:
    """What the MindSpore subprocess reported; ``error`` is set when it failed or timed out."""

    soc: str = ""
    available: bool = False
    device_count: int | None = None
    mindspore: str | None = None
    error: str | None = None


# Runs in a fresh interpreter: only queries (no Ascend operator is ever called). Prints one JSON line.
PROBE_CODE = """
import json, os
os.environ.setdefault("GLOG_v", "3")
out = {}
try:
    import mindspore as ms
    out["mindspore"] = ms.__version__
    out["available"] = bool(ms.device_context.ascend.is_available())
    if out["available"]:
        from mindspore._c_expression import MSContext
        out["soc"] = MSContext.get_instance().get_ascend_soc_version()
        out["device_count"] = int(ms.device_context.ascend.device_count())
except Exception as err:
    out["error"] = type(err).__name__ + ": " + str(err).splitlines()[0][:200]
print("MOE_LAB_PROBE " + json.dumps(out))
"""


def probe_mindspore(timeout: float = PROBE_TIMEOUT_S, python: str = sys.executable,
                    code: str = PROBE_CODE) -> ProbeResult:
    """Ask MindSpore, in a subprocess with a time limit, whether the Ascend plugin loads and for the SoC."""
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "GLOG_v": "3"})
    except subprocess.TimeoutExpired:
        return ProbeResult(error=f"the MindSpore probe did not answer within {timeout:g} s")
    except OSError as err:
        return ProbeResult(error=f"could not start the MindSpore probe: {err}")
    line = next((s for s in done.stdout.splitlines() if s.startswith("MOE_LAB_PROBE ")), None)
    if line is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return ProbeResult(error=f"the MindSpore probe exited with code {done.returncode}: {tail}")
    data = json.loads(line[len("MOE_LAB_PROBE "):])
    return ProbeResult(soc=data.get("soc") or "", available=bool(data.get("available")),
                       device_count=data.get("device_count"), mindspore=data.get("mindspore"),
                       error=data.get("error"))


def normalize_soc(soc: str | None) -> str | None:
    """``"Ascend910B3"`` / ``"ascend910b"`` -> ``"ascend910b"``; unknown or empty -> None."""
    if not soc:
        return None
    name = soc.strip().lower().replace(" ", "")
    for pattern, short in _SOC_PATTERNS:
        if pattern.match(name):
            return short or name
    return None


def tier_of_soc(soc: str | None) -> str:
    """The tier of a SoC name (see the module docstring); ``"cpu"`` when there is no Ascend SoC."""
    short = normalize_soc(soc)
    if short is None:
        return "cpu"
    return _SOC_TIER.get(short, "npu-basic")


def backend_choice(env: Mapping[str, str] | None = None) -> str:
    """``MOE_LAB_BACKEND``, lower-cased; a clear ValueError for anything but auto/cpu/ascend."""
    env = os.environ if env is None else env
    raw = env.get(BACKEND_ENV, "auto")
    return check_choice(BACKEND_ENV, raw.strip().lower() or "auto", BACKEND_CHOICES)


class AscendUnavailableError(RuntimeError):
    """``MOE_LAB_BACKEND=ascend`` on a machine where no usable Ascend NPU was found."""


def detect_backend(env: Mapping[str, str] | None = None, signals: HostSignals | None = None,
                   probe: Callable[[float], ProbeResult] | None = None,
                   timeout: float = PROBE_TIMEOUT_S) -> Backend:
    """Choose the backend once (see the module docstring). With no arguments the answer is cached.

    ``env`` (default ``os.environ``), ``signals`` (default ``host_signals()``) and ``probe`` (default
    ``probe_mindspore``, called with the time limit) can be injected.
    ``MOE_LAB_BACKEND=ascend`` without a usable board raises ``AscendUnavailableError`` at once.
    """
    if env is None and signals is None and probe is None and timeout == PROBE_TIMEOUT_S:
        global _CACHED
        if _CACHED is None:
            _CACHED = _detect(os.environ, None, None, timeout)
        return _CACHED
    return _detect(os.environ if env is None else env, signals, probe, timeout)


_CACHED: Backend | None = None


def _detect(env, signals, probe, timeout) -> Backend:
    choice = backend_choice(env)
    timeout = check_float("timeout", timeout, minimum=0.0, strict=True)
    if choice == "cpu":
        return Backend(name="cpu", device="CPU", reason=f"{BACKEND_ENV}=cpu")
    signals = host_signals(env=env) if signals is None else signals
    forced = choice == "ascend"

    def fallback(why: str) -> Backend:
        if forced:
            raise AscendUnavailableError(f"{BACKEND_ENV}=ascend, but {why}. Host: {signals.summary()}. "
                                         f"Unset {BACKEND_ENV} (or set it to cpu) to run on the CPU.")
        return Backend(name="cpu", device="CPU", reason=why)

    if not signals.has_device:
        extra = ""
        if signals.npu_smi or signals.cann_home:  # a CANN toolkit alone (e.g. a build machine) is no NPU
            extra = " (CANN/npu-smi found, but without a device node there is no usable NPU; in a container, " \
                    "pass /dev/davinci* through)"
        return fallback(f"no /dev/davinci* device node{extra}")
    result = (probe or probe_mindspore)(timeout)
    if result.error:
        return fallback(f"device nodes found, but the MindSpore probe failed: {result.error}")
    if not result.available:
        return fallback("device nodes found, but MindSpore cannot load its Ascend plugin (source "
                        "set_env.sh of the CANN toolkit so that its libraries are found)")
    tier = tier_of_soc(result.soc)
    if tier == "cpu":
        return fallback(f"MindSpore reported no known Ascend SoC (got {result.soc!r})")
    soc = normalize_soc(result.soc)
    how = f"{BACKEND_ENV}={choice}; {len(signals.device_nodes)} device node(s); MindSpore {result.mindspore} " \
          f"reports SoC {soc}"
    return Backend(name=f"ascend-{tier}", device="Ascend", soc=soc, tier=tier, reason=how,
                   device_count=result.device_count)


def current_backend() -> Backend:
    """The detected backend, unless ``moe_lab.setup(device="CPU")`` explicitly put MindSpore on the CPU."""
    from moe_lab import env as _env  # the device moe_lab.setup actually set

    backend = detect_backend()
    if _env._DEVICE == "CPU" and backend.device != "CPU":
        return Backend(name="cpu", device="CPU", reason="moe_lab.setup(device='CPU') was called")
    return backend


def require_fused(backend: Backend | None = None) -> Backend:
    """Raise a clear error unless ``backend`` (default: the current one) can run the fused operators."""
    backend = current_backend() if backend is None else backend
    if not backend.can_run_fused:
        raise RuntimeError(
            "dispatch='fused' needs the compiled Ascend MoE operators (MoeInitRoutingV2, GroupedMatmulV4, "
            "MoeTokenUnpermute), which exist on Atlas A2/A3 and (fp16) Atlas 300I Duo boards; this machine's "
            f"backend is {backend.name} ({backend.reason}). Use dispatch='sorted', or run the same pipeline "
            "with the CPU reference operators: moe_lab.fused.fused_moe(x, routing, experts, "
            "kernels=moe_lab.fused.REFERENCE_KERNELS).")
    return backend


# ----------------------------------------------------------------------------- the boards x operators table
OPS_TABLE = Path(__file__).resolve().parent.parent / "data" / "ascend_ops.json"
TABLE_SOCS = ("ascend910b", "ascend910_93", "ascend310p", "ascend310b")


def load_ops_table(path: str | Path | None = None) -> dict:
    """``data/ascend_ops.json``: which SoC registers which compiled MoE operator, with sources."""
    path = Path(OPS_TABLE if path is None else path)
    if not path.exists():
        raise FileNotFoundError(f"the operator table {path} is missing (it ships in the repository's data/ folder)")
    return json.loads(path.read_text(encoding="utf-8"))


def ops_table_text(table: dict | None = None) -> str:
    """The table as fixed-width text (notebook 07): one row per operator, one column per SoC."""
    table = load_ops_table() if table is None else table
    head = ["operator", *TABLE_SOCS, "CPU reference"]
    rows = [[op["operator"], *(op["support"][soc] for soc in TABLE_SOCS), op["ascend_ref"] or "-"]
            for op in table["operators"]]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pipeline_supported(soc: str, table: dict | None = None) -> bool:
    """Whether the table says ``soc`` registers all three operators of the fused pipeline."""
    table = load_ops_table() if table is None else table
    support = {op["operator"]: op["support"] for op in table["operators"]}
    return all(not support[name][soc].startswith(("no", "unknown")) for name in PIPELINE_OPS)
