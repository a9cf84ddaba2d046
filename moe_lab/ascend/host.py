"""What the host shows about Ascend NPUs without importing MindSpore: device nodes, npu-smi, CANN.

Introduced in notebook 08 (used from notebook 01 on: ``moe_lab.env`` reads it before MindSpore is
imported, to keep MindSpore's logs quiet on a CPU but show its CANN version warnings on a board).
Pure standard library, so it is cheap and safe to call anywhere. Every source can be replaced
(tests use a temporary ``dev_dir`` and fake ``which``/``exists``/``access``).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from moe_lab.i18n import _

NPU_SMI_PATHS = ("/usr/local/bin/npu-smi", "/usr/local/sbin/npu-smi", "/usr/local/Ascend/npu-smi/npu-smi")
# the NPU driver creates /dev/davinci<N> (one per NPU) and /dev/davinci_manager on every board (servers and
# cards also /dev/devmm_svm and /dev/hisi_hdc; 310B boards /dev/svm0 instead); a container must be given them,
# and the user needs read/write access (membership of the HwHiAiUser group)
CONTROL_NODES = ("davinci_manager",)
_NODE = re.compile(r"v?davinci\d+")  # vdavinci<N>: a virtual NPU (a slice of one) passed to a container


@dataclass(frozen=True)
class HostSignals:
    """The cheap host signals of an Ascend NPU (no ACL initialisation, no MindSpore import)."""

    device_nodes: tuple[str, ...] = ()  # /dev/davinci0, /dev/vdavinci1, ... (not davinci_manager)
    npu_smi: str | None = None  # path of npu-smi, if installed
    cann_home: str | None = None  # ASCEND_HOME_PATH / ASCEND_TOOLKIT_HOME, if set
    missing_control: tuple[str, ...] = ()  # control nodes absent although device nodes exist
    unreadable: tuple[str, ...] = ()  # device nodes this user cannot open for reading and writing

    @property
    def has_device(self) -> bool:
        return bool(self.device_nodes)

    def summary(self) -> str:
        """One line for a learner (notebook 08), in the package's language."""
        return _("device nodes: {nodes}; npu-smi: {npu_smi}; CANN: {cann}").format(
            nodes=", ".join(self.device_nodes) if self.device_nodes else _("none"),
            npu_smi=self.npu_smi or _("not found"), cann=self.cann_home or _("not set"))

    def access_hint(self) -> str:
        """Why device nodes that exist may still be unusable, or ``""`` when nothing looks wrong (in the package's
        language: notebook 08 prints it within the reason for running on the CPU)."""
        hints = []
        if self.unreadable:
            hints.append(_("this user cannot open {nodes}: add it to the HwHiAiUser group (usermod -aG HwHiAiUser "
                           "$USER, then log in again) or run as the driver's user").format(
                nodes=", ".join(self.unreadable)))
        if self.missing_control:
            hints.append(_("{nodes} missing: in a container, pass /dev/davinci_manager (and /dev/devmm_svm, "
                           "/dev/hisi_hdc, or /dev/svm0 on a 310B board) through with the /dev/davinci* nodes").format(
                nodes="/dev/" + ", /dev/".join(self.missing_control)))
        return _("; ").join(hints)


def host_signals(dev_dir: str = "/dev", env: Mapping[str, str] | None = None,
                 which: Callable[[str], str | None] = shutil.which,
                 exists: Callable[[str], bool] = os.path.exists,
                 access: Callable[[str], bool] = lambda path: os.access(path, os.R_OK | os.W_OK)) -> HostSignals:
    """Collect the cheap host signals."""
    env = os.environ if env is None else env
    nodes = [p for p in glob.glob(os.path.join(dev_dir, "*davinci*")) if _NODE.fullmatch(os.path.basename(p))]
    nodes.sort(key=lambda p: (os.path.basename(p).startswith("v"), int(re.sub(r"\D", "", os.path.basename(p)))))
    npu_smi = which("npu-smi") or next((p for p in NPU_SMI_PATHS if exists(p)), None)
    cann_home = env.get("ASCEND_HOME_PATH") or env.get("ASCEND_TOOLKIT_HOME") or None
    missing = tuple(n for n in CONTROL_NODES if nodes and not os.path.exists(os.path.join(dev_dir, n)))
    unreadable = tuple(p for p in nodes if not access(p))
    return HostSignals(tuple(nodes), npu_smi, cann_home, missing, unreadable)
