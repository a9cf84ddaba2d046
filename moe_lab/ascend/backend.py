"""Which hardware runs the course: a CPU, an Atlas board (and which one), or an emulated board.

Introduced in notebook 08 (``moe_lab.setup`` calls ``detect_backend()`` from notebook 01 on).

Why detection and not ``try: <Ascend op> except: <CPU path>``: on a CPU MindSpore's Ascend-only MoE
operators import fine, then either fail *late* (the error surfaces at the next unrelated op and poisons
it) or, like ``GroupedMatmul``, return an empty tuple without any error (measured with MindSpore 2.10 on
CPU). So the backend is chosen once, before any such op is called:

1. ``MOE_LAB_BACKEND`` = ``auto`` (default), ``cpu``, ``ascend``, or an emulated board
   (``emulate-910b``, ``emulate-910_93``, ``emulate-310p``, ``emulate-310b``);
2. cheap host checks (``moe_lab.ascend.host``): ``/dev/davinci<N>`` (or ``/dev/vdavinci<N>``) device
   nodes, ``npu-smi``, the CANN environment;
3. only if a device node exists: a subprocess asks MindSpore for the SoC name (in a subprocess so that
   ACL is not initialised in this process, the vllm-mindspore pattern), within ``MOE_LAB_PROBE_TIMEOUT``
   seconds (default 60: a cold import on an Orange Pi AIpro can take tens of seconds);
4. the SoC picks a tier:

   ====================  =================================  =========================================
   SoC                   boards                             what runs
   ====================  =================================  =========================================
   ascend910b            Atlas 800T/800I A2 (Atlas A2)      ``fused``: every fused MoE op
   ascend910_93          Atlas A3                           ``fused``
   ascend310p            Atlas 300I Duo / Pro               ``fp16-subset``: MoeInitRoutingV2,
                                                            GroupedMatmul (fp16), MoeTokenUnpermute
   ascend310b            Atlas 200I DK A2, Orange Pi AIpro  ``npu-basic``: no fused MoE op; ordinary
                                                            ops on the NPU (the "sorted" path)
   other ascend SoCs     Atlas 800 (910A), Atlas 200 DK...  ``npu-basic``
   (none)                laptop, CI                         ``cpu``
   ====================  =================================  =========================================

**Emulated boards** exist so that everything a board runs is run in CI: the tier, default dispatch and
dtypes of that board, with MindSpore on the CPU and the reference operators of ``moe_lab.ascend.ops_ref``
in place of the compiled ones (``moe_lab.ascend.fused.kernels_for``). Asking an emulated board for an
operator its SoC does not have fails with the SoC and the operator named, as the board would.

The fused path computes in float32 by default on A2/A3 (all three pipeline operators accept float32,
``GroupedMatmulV4`` in its ``split_item=3`` mode), so the course's checks keep their float32 tolerance;
``MOE_LAB_FUSED_DTYPE=bfloat16`` gives the production precision (notebook 08 measures its error). The 310P
has no bfloat16 and its ``MoeTokenUnpermute`` is float16 only: float16 there.

Every function takes its host signals as arguments (``tests/test_backend.py`` fakes each tier, a probe
that fails and one that hangs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms

from moe_lab.ascend.host import HostSignals, host_signals
from moe_lab.checks import check_choice, check_float
from moe_lab.i18n import N_, _
from moe_lab.textfmt import ljust, width

BACKEND_ENV = "MOE_LAB_BACKEND"
PROBE_TIMEOUT_ENV = "MOE_LAB_PROBE_TIMEOUT"
FUSED_DTYPE_ENV = "MOE_LAB_FUSED_DTYPE"
PROBE_TIMEOUT_S = 60.0
EMULATED = {"emulate-910b": "ascend910b", "emulate-910_93": "ascend910_93", "emulate-310p": "ascend310p",
            "emulate-310b": "ascend310b"}
BACKEND_CHOICES = ("auto", "cpu", "ascend", *EMULATED)
FUSED_DTYPES = ("float32", "bfloat16", "float16")

# tier -> boards (in English; ``Backend.boards`` translates them), fused pipeline allowed, the dtypes its fused
# path may compute in (first = default)
TIERS = {
    "fused": dict(boards=N_("Atlas A2/A3 (Atlas 800T/800I A2, A3 servers)"), fused=True,
                  dtypes=("float32", "bfloat16", "float16")),
    "fp16-subset": dict(boards="Atlas 300I Duo/Pro (Ascend 310P)", fused=True, dtypes=("float16",)),
    "npu-basic": dict(boards=N_("Atlas 200I DK A2 / Orange Pi AIpro (Ascend 310B) or older Ascend"),
                      fused=False, dtypes=()),
    "cpu": dict(boards=N_("no Ascend NPU"), fused=False, dtypes=()),
}
# The operators of the fused pipeline (MoeInitRoutingV2 -> GroupedMatmulV4 -> MoeTokenUnpermute) that
# each tier registers, from data/ascend_ops.json (tests check the two agree).
PIPELINE_OPS = ("MoeInitRoutingV2", "GroupedMatmulV4", "MoeTokenUnpermute")

# aclrtGetSocName spellings -> MindSpore's short SoC name (mindspore ascend_device_context.cc
# SetContextSocVersion). Exact: the old Atlas 800's "Ascend910B" (no digit) is a 910, not a 910B.
_SOC_PATTERNS = (
    (re.compile(r"ascend910_?93\w*"), "ascend910_93"),
    (re.compile(r"ascend910b[1-4][a-z0-9]*(?:-\d+)?"), None),  # Ascend910B1..B4, B2C, B4-1
    (re.compile(r"ascend310p\d*"), "ascend310p"),
    (re.compile(r"ascend310b\d*"), "ascend310b"),
    (re.compile(r"ascend910(?:a|b|proa|prob|premiuma)?"), "ascend910"),
    (re.compile(r"ascend\w+"), ""),  # another Ascend SoC: keep its own name
)
_SOC_TIER = {"ascend910_93": "fused", "ascend910b": "fused", "ascend310p": "fp16-subset",
             "ascend310b": "npu-basic"}


@dataclass(frozen=True)
class Backend:
    """The detected backend. ``device`` is MindSpore's device target (``"CPU"`` or ``"Ascend"``)."""

    name: str  # "cpu", "ascend-<tier>" or "emulate-<soc>"
    device: str  # "CPU" | "Ascend"
    soc: str | None = None  # MindSpore's SoC name, e.g. "ascend910b"; None on CPU
    tier: str = "cpu"  # a key of TIERS
    reason: str = ""  # how it was decided (shown by notebook 08), in the language of the moment of detection
    device_count: int | None = None
    emulated: bool = False  # MindSpore on the CPU, reference operators in place of the compiled ones
    fused_dtype: str | None = None  # the dtype the fused path computes in; None where there is no fused path

    @property
    def boards(self) -> str:
        """The boards of this tier, in the package's language."""
        boards = TIERS[self.tier]["boards"]  # a variable: Babel would take a literal in _() for a message
        return _(boards)

    @property
    def can_run_fused(self) -> bool:
        """Whether MoeInitRoutingV2 / GroupedMatmulV4 / MoeTokenUnpermute exist here (or are emulated)."""
        return bool(TIERS[self.tier]["fused"])

    @property
    def compute_dtype(self) -> str | None:
        """The dtype the fused path computes in (float32 on A2/A3 unless ``MOE_LAB_FUSED_DTYPE`` says
        otherwise; float16 on the 310P, which has no bfloat16)."""
        return self.fused_dtype

    @property
    def default_dispatch(self) -> str:
        """``"fused"`` on Atlas A2/A3 (real or emulated), ``"sorted"`` everywhere else (310P: on request)."""
        return "fused" if self.tier == "fused" else "sorted"

    def describe(self) -> str:
        """One line for a learner (notebook 08): backend, device, SoC, tier, default dispatch, and why."""
        kind = (_("emulated board (MindSpore on the CPU, reference operators)") if self.emulated
                else _("device {device}").format(device=self.device))
        fields = dict(name=self.name, kind=kind, soc=self.soc or "-", tier=self.tier, boards=self.boards,
                      dispatch=repr(self.default_dispatch), dtype=self.fused_dtype, reason=self.reason)
        if self.fused_dtype:
            return _("backend {name}: {kind}, SoC {soc}, tier {tier} ({boards}); default dispatch {dispatch}, "
                     "fused path in {dtype}; {reason}").format(**fields)
        return _("backend {name}: {kind}, SoC {soc}, tier {tier} ({boards}); default dispatch {dispatch}; "
                 "{reason}").format(**fields)


CPU = Backend(name="cpu", device="CPU", reason="default")


@dataclass(frozen=True)
class ProbeResult:
    """What the MindSpore subprocess reported; ``error`` is set when it failed or timed out."""

    soc: str = ""
    available: bool = False
    device_count: int | None = None
    mindspore: str | None = None
    error: str | None = None


# Runs in a fresh interpreter: only queries (no Ascend operator is ever called). Prints one JSON line.
# The device count has its own try: failing to count must not throw away a SoC already known.
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
except Exception as err:
    out["error"] = type(err).__name__ + ": " + str(err).splitlines()[0][:200]
if out.get("soc"):
    try:
        out["device_count"] = int(ms.device_context.ascend.device_count())
    except Exception:
        out["device_count"] = None
print("MOE_LAB_PROBE " + json.dumps(out))
"""


def probe_timeout(env: Mapping[str, str] | None = None) -> float:
    """``MOE_LAB_PROBE_TIMEOUT`` in seconds (default 60); a clear error for anything but a positive number."""
    env = os.environ if env is None else env
    raw = env.get(PROBE_TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return PROBE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{PROBE_TIMEOUT_ENV} must be a number of seconds > 0, got {raw!r}") from None
    return check_float(PROBE_TIMEOUT_ENV, value, minimum=0.0, strict=True)


def probe_mindspore(timeout: float = PROBE_TIMEOUT_S, python: str = sys.executable,
                    code: str = PROBE_CODE) -> ProbeResult:
    """Ask MindSpore, in a subprocess with a time limit, whether the Ascend plugin loads and for the SoC."""
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "GLOG_v": "3"})
    except subprocess.TimeoutExpired:
        return ProbeResult(error=_("the MindSpore probe did not answer within {timeout} s (raise {variable} on a "
                                   "slow board)").format(timeout=f"{timeout:g}", variable=PROBE_TIMEOUT_ENV))
    except OSError as err:
        return ProbeResult(error=_("could not start the MindSpore probe: {error}").format(error=err))
    line = next((s for s in done.stdout.splitlines() if s.startswith("MOE_LAB_PROBE ")), None)
    if line is None:
        tail = (done.stderr.strip().splitlines() or [_("no output")])[-1][:200]
        return ProbeResult(error=_("the MindSpore probe exited with code {code}: {tail}").format(
            code=done.returncode, tail=tail))
    data = json.loads(line[len("MOE_LAB_PROBE "):])
    return ProbeResult(soc=data.get("soc") or "", available=bool(data.get("available")),
                       device_count=data.get("device_count"), mindspore=data.get("mindspore"),
                       error=data.get("error"))


def normalize_soc(soc: str | None) -> str | None:
    """``"Ascend910B3"`` / ``"ascend910b"`` -> ``"ascend910b"``; ``"Ascend910B"`` (an old 910) -> ``"ascend910"``;
    unknown or empty -> None."""
    if not soc:
        return None
    if soc.strip() == "Ascend910B":  # aclrtGetSocName of an old 910 (MindSpore maps it to "ascend910")
        return "ascend910"
    name = soc.strip().lower().replace(" ", "")
    if name == "ascend910b":  # MindSpore's own short name of the A2 SoC (what the probe reports)
        return "ascend910b"
    for pattern, short in _SOC_PATTERNS:
        if pattern.fullmatch(name):
            if short is None:  # Ascend910B1..B4 (the raw name "Ascend910B" alone was handled above)
                return "ascend910b"
            return short or name
    return None


def tier_of_soc(soc: str | None) -> str:
    """The tier of a SoC name (see the module docstring); ``"cpu"`` when there is no Ascend SoC."""
    short = normalize_soc(soc)
    if short is None:
        return "cpu"
    return _SOC_TIER.get(short, "npu-basic")


def fused_dtype_of(tier: str, env: Mapping[str, str] | None = None) -> str | None:
    """The fused path's compute dtype on ``tier``: ``MOE_LAB_FUSED_DTYPE`` if set and allowed there, else the
    tier's default (float32 on A2/A3, float16 on the 310P); None where the tier has no fused path."""
    env = os.environ if env is None else env
    allowed = TIERS[tier]["dtypes"]
    if not allowed:
        return None
    raw = (env.get(FUSED_DTYPE_ENV) or "").strip().lower()
    if not raw:
        return allowed[0]
    check_choice(FUSED_DTYPE_ENV, raw, FUSED_DTYPES)
    if raw not in allowed:
        raise ValueError(f"{FUSED_DTYPE_ENV}={raw} is not available on {TIERS[tier]['boards']}: "
                         f"allowed {', '.join(allowed)}")
    return raw


def backend_choice(env: Mapping[str, str] | None = None) -> str:
    """``MOE_LAB_BACKEND``, lower-cased; a clear ValueError listing the valid values for anything else."""
    env = os.environ if env is None else env
    raw = env.get(BACKEND_ENV, "auto")
    return check_choice(BACKEND_ENV, raw.strip().lower() or "auto", BACKEND_CHOICES)


class AscendUnavailableError(RuntimeError):
    """``MOE_LAB_BACKEND=ascend`` on a machine where no usable Ascend NPU was found."""


def emulated_backend(choice: str, env: Mapping[str, str] | None = None) -> Backend:
    """The backend of an emulated board, e.g. ``emulated_backend("emulate-910b")``."""
    check_choice(BACKEND_ENV, choice, tuple(EMULATED))
    soc = EMULATED[choice]
    tier = tier_of_soc(soc)
    return Backend(name=choice, device="CPU", soc=soc, tier=tier, emulated=True,
                   fused_dtype=fused_dtype_of(tier, env),
                   reason=_("{variable}={choice}: MindSpore on the CPU, moe_lab.ascend.ops_ref in place of the "
                            "compiled {soc} operators").format(variable=BACKEND_ENV, choice=choice, soc=soc))


def detect_backend(env: Mapping[str, str] | None = None, signals: HostSignals | None = None,
                   probe: Callable[[float], ProbeResult] | None = None,
                   timeout: float | None = None, report: Callable[[str], None] | None = None) -> Backend:
    """Choose the backend once (see the module docstring). With no arguments the answer is cached.

    ``env`` (default ``os.environ``), ``signals`` (default ``host_signals()``), ``probe`` (default
    ``probe_mindspore``, called with the time limit), ``timeout`` (default ``MOE_LAB_PROBE_TIMEOUT``) and
    ``report`` (where a fallback to the CPU is explained; default: standard error) can be injected.
    ``MOE_LAB_BACKEND=ascend`` without a usable board raises ``AscendUnavailableError`` at once.
    """
    if env is None and signals is None and probe is None and timeout is None and report is None:
        global _CACHED
        if _CACHED is None:
            _CACHED = _detect(os.environ, None, None, None, _stderr)
        return _CACHED
    return _detect(os.environ if env is None else env, signals, probe, timeout, report or _stderr)


_CACHED: Backend | None = None


def _stderr(message: str) -> None:
    print(f"moe_lab: {message}", file=sys.stderr)


def _detect(env, signals, probe, timeout, report) -> Backend:
    choice = backend_choice(env)
    timeout = probe_timeout(env) if timeout is None else check_float("timeout", timeout, minimum=0.0, strict=True)
    if choice == "cpu":
        return Backend(name="cpu", device="CPU", reason=f"{BACKEND_ENV}=cpu")
    if choice in EMULATED:
        return emulated_backend(choice, env)
    signals = host_signals(env=env) if signals is None else signals
    forced = choice == "ascend"

    def fallback(why: str, loud: bool = False) -> Backend:
        hint = signals.access_hint()
        why = _("{why} ({hint})").format(why=why, hint=hint) if hint else why
        if forced:
            raise AscendUnavailableError(f"{BACKEND_ENV}=ascend, but {why}. Host: {signals.summary()}. "
                                         f"Unset {BACKEND_ENV} (or set it to cpu) to run on the CPU.")
        if loud:  # an NPU seems to be there: say why it is not used, instead of running on the CPU silently
            report(_("running on the CPU: {why}").format(why=why))
        return Backend(name="cpu", device="CPU", reason=why)

    if not signals.has_device:
        if signals.npu_smi or signals.cann_home:  # a CANN toolkit alone (e.g. a build machine) is no NPU
            return fallback(_("no /dev/davinci* device node (CANN/npu-smi found, but without a device node there is "
                              "no usable NPU; in a container, pass /dev/davinci* through)"))
        return fallback(_("no /dev/davinci* device node"))
    result = (probe or probe_mindspore)(timeout)
    if result.error:
        return fallback(_("device nodes found, but the MindSpore probe failed: {error}").format(error=result.error),
                        loud=True)
    if not result.available:
        return fallback(_("device nodes found, but MindSpore cannot load its Ascend plugin (source the CANN "
                          "toolkit's set_env.sh so that its libraries are found)"), loud=True)
    tier = tier_of_soc(result.soc)
    if tier == "cpu":
        return fallback(_("MindSpore reported no known Ascend SoC (got {soc})").format(soc=repr(result.soc)),
                        loud=True)
    soc = normalize_soc(result.soc)
    how = _("{variable}={choice}; {nodes} device node(s); MindSpore {version} reports SoC {soc}").format(
        variable=BACKEND_ENV, choice=choice, nodes=len(signals.device_nodes), version=result.mindspore, soc=soc)
    return Backend(name=f"ascend-{tier}", device="Ascend", soc=soc, tier=tier, reason=how,
                   device_count=result.device_count, fused_dtype=fused_dtype_of(tier, env))


# ----------------------------------------------------------------------------- the device MindSpore runs on

_DEVICE: str | None = None


def set_device(target: str = "CPU") -> str:
    """Select MindSpore's device once per process (MindSpore refuses to change it later)."""
    global _DEVICE
    check_choice("device", target, ("CPU", "Ascend"))
    if _DEVICE is None:
        ms.set_device(target)
        _DEVICE = target
    return _DEVICE


def current_backend() -> Backend:
    """The detected backend, unless ``moe_lab.setup(device="CPU")`` explicitly put MindSpore on the CPU."""
    backend = detect_backend()
    if _DEVICE == "CPU" and backend.device != "CPU":
        return Backend(name="cpu", device="CPU", reason=_("moe_lab.setup(device='CPU') was called"))
    return backend


def require_fused(backend: Backend | None = None) -> Backend:
    """Raise a clear error unless ``backend`` (default: the current one) can run the fused operators."""
    backend = current_backend() if backend is None else backend
    if not backend.can_run_fused:
        raise RuntimeError(
            "dispatch='fused' needs the compiled Ascend MoE operators (MoeInitRoutingV2, GroupedMatmulV4, "
            "MoeTokenUnpermute), which exist on Atlas A2/A3 and (fp16) Atlas 300I Duo boards; the "
            f"backend is {backend.name} ({backend.reason}). Use dispatch='sorted', or run the same pipeline "
            "with the CPU reference operators: moe_lab.ascend.fused.fused_moe(..., "
            "kernels=moe_lab.ascend.fused.REFERENCE_KERNELS).")
    return backend


# ----------------------------------------------------------------------------- the boards x operators table
OPS_TABLE = Path(__file__).resolve().parent.parent.parent / "data" / "ascend_ops.json"
TABLE_SOCS = ("ascend910b", "ascend910_93", "ascend310p", "ascend310b")


def load_ops_table(path: str | Path | None = None) -> dict:
    """``data/ascend_ops.json``: which SoC registers which compiled MoE operator, with sources."""
    path = Path(OPS_TABLE if path is None else path)
    if not path.exists():
        raise FileNotFoundError(f"the operator table {path} is missing (it ships in the repository's data/ folder)")
    return json.loads(path.read_text(encoding="utf-8"))


# How the table's support values read to a learner ("fp16": only in float16, a name)
SUPPORT_LABELS = {"yes": N_("yes"), "no": N_("no"), "unknown": N_("unknown")}


def support_label(value: str) -> str:
    """A support value of ``data/ascend_ops.json`` (``yes``, ``fp16``, ``no``, ``unknown``) in the package's
    language."""
    return _(SUPPORT_LABELS[value]) if value in SUPPORT_LABELS else value


def ops_table_text(table: dict | None = None) -> str:
    """The table as fixed-width text (notebook 08): one row per operator, one column per SoC, in the package's
    language (columns measured in display width, so that Chinese words keep them aligned)."""
    table = load_ops_table() if table is None else table
    head = [_("operator"), *TABLE_SOCS, _("CPU reference")]
    rows = [[op["operator"], *(support_label(op["support"][soc]) for soc in TABLE_SOCS), op["ascend_ref"] or "-"]
            for op in table["operators"]]
    widths = [max(width(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(ljust(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def op_support(soc: str, operator: str, table: dict | None = None) -> str:
    """What the table says ``soc`` has of ``operator``: ``yes``, ``fp16``, ``no`` or ``unknown``."""
    table = load_ops_table() if table is None else table
    support = {op["operator"]: op["support"] for op in table["operators"]}
    check_choice("operator", operator, tuple(support))
    check_choice("soc", soc, TABLE_SOCS)
    return support[operator][soc]


def pipeline_supported(soc: str, table: dict | None = None) -> bool:
    """Whether the table says ``soc`` registers all three operators of the fused pipeline."""
    table = load_ops_table() if table is None else table
    return all(not op_support(soc, name, table).startswith(("no", "unknown")) for name in PIPELINE_OPS)
