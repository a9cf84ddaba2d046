"""One call at the top of every notebook: quiet logs, device, seeds, print and plot defaults.

Introduced in notebook 01 (first code cell). Importing ``moe_lab`` imports this module first.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from moe_lab.ascend.host import HostSignals, host_signals


def quiet_logs(signals: HostSignals) -> bool:
    """Whether MindSpore's log level is set to errors only (``GLOG_v=3``) on this host.

    On a CPU, MindSpore's WARNING lines would only clutter the stored outputs: quiet them. On an Ascend board
    keep MindSpore's default level (``GLOG_v=2``), which prints its CANN version-mismatch warnings: a learner
    with a mismatched toolkit needs them. Decided from the device nodes, before MindSpore is imported.
    """
    return not signals.has_device


if quiet_logs(host_signals()):
    os.environ.setdefault("GLOG_v", "3")
# In PyNative mode MindSpore's host thread busy-waits for each graph it launches; on a 2-core machine that
# steals the core the kernels need (a small training step: 127 ms with the wait, 33 ms without, the same
# losses). MindSpore reads this before its first operator; benchmarks/host_wait.py measures both.
os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")

import matplotlib  # noqa: E402
import matplotlib.font_manager as font_manager  # noqa: E402
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402

from moe_lab.ascend.backend import detect_backend, set_device  # noqa: E402
from moe_lab.checks import check_int  # noqa: E402
from moe_lab.i18n import set_language  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def repo_path(*parts: str) -> Path:
    """A path inside the course's repository, e.g. ``repo_path("data", "models")``: the same from every folder
    (the English notebooks, the Chinese ones in ``notebooks/zh``, a test, a script)."""
    path = REPO.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{'/'.join(parts)} is not in the repository ({REPO.name}/{'/'.join(parts)})")
    return path


# Fonts with Chinese glyphs, most common first: Debian/Ubuntu's WenQuanYi (`make fonts` installs Micro Hei),
# Noto/Source Han, Android's fallback, then Windows and macOS system fonts
CJK_FONTS = ("WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
             "Droid Sans Fallback", "Microsoft YaHei", "SimHei", "PingFang SC", "Heiti SC", "Hiragino Sans GB",
             "Arial Unicode MS")
# their file names, to find one installed after matplotlib built its font cache
CJK_FILES = ("wqy", "notosanscjk", "notosanssc", "sourcehansans", "droidsansfallback", "msyh", "simhei", "pingfang",
             "hiragino", "arialuni")


@functools.cache
def cjk_fonts() -> tuple[str, ...]:
    """The installed fonts of ``CJK_FONTS``, in that order.

    matplotlib only knows the fonts present when it built its cache; if it knows none of them, the system font
    folders are searched once and the CJK fonts found there are registered."""
    def known():
        installed = {f.name for f in font_manager.fontManager.ttflist}
        return tuple(name for name in CJK_FONTS if name in installed)

    if not known():
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower().replace("-", "").replace("_", "") for key in CJK_FILES):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # an unreadable font file: skip it
                    continue
    return known()


def cjk_font() -> str | None:
    """The first installed font of ``CJK_FONTS`` (see ``cjk_fonts``), or None."""
    return next(iter(cjk_fonts()), None)


def setup(seed: int = 0, device: str | None = None, lang: str | None = None) -> dict:
    """Prepare a notebook or test: device, seeds (NumPy and MindSpore), rounded printing, figure size, and the
    language of everything the package prints or draws (``lang``: ``"en"`` or ``"zh"``; default the environment
    variable ``MOE_LAB_LANG``, else English).

    Returns a small dict describing the environment (MindSpore version, device, backend, language).
    """
    seed = check_int("seed", seed, minimum=0)
    lang = set_language(lang)
    backend = detect_backend()
    device = set_device(backend.device if device is None else device)
    ms.set_seed(seed)
    np.random.seed(seed)
    np.set_printoptions(precision=4, suppress=True, linewidth=110)
    matplotlib.rcParams.update({"figure.figsize": (6.4, 3.6), "figure.dpi": 90, "axes.grid": True,
                                "grid.alpha": 0.3})
    if lang == "zh":
        font = cjk_font()
        if font is None:
            print("moe_lab: no font with Chinese characters found, so Chinese text in plots shows as boxes; install "
                  "one (Debian/Ubuntu: sudo apt-get install fonts-wqy-microhei) and restart the kernel")
        else:  # the CJK font first: it draws Latin letters and digits too; DejaVu Sans for what it lacks
            matplotlib.rcParams["font.sans-serif"] = [font, "DejaVu Sans"]
            matplotlib.rcParams["axes.unicode_minus"] = False
    return {"mindspore": ms.__version__, "numpy": np.__version__, "device": device, "backend": backend.name,
            "lang": lang}
