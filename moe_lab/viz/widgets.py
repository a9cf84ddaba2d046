"""The widget pattern of the course: one PNG per redraw, a PNG fallback, and the ``Dashboard`` base.

Introduced in notebook 05. Measured in JupyterLab 4.6, Voila 0.5 and static HTML: inline backend,
``interactive_output`` showing exactly one PNG per redraw (what ``plt.show()`` does, here without its
tight-bounding-box pass, see ``show_png``), a fixed figure size and fixed axes, ``out.layout.min_height``
so nothing jumps while redrawing, and a PNG fallback in the display bundle so the notebook shows a real
picture where widgets cannot run (GitHub, nbviewer, exported HTML, a freshly cloned untrusted notebook).
Every dashboard of the package (``moe_lab.viz.dashboards``, ``moe_lab.viz.ep``, ``moe_lab.viz.budget``)
builds on this module.
"""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from IPython import get_ipython
from IPython.display import Image, display


def figure_png(fig, dpi: float | None = None) -> bytes:
    """PNG bytes of ``fig`` (then closed: the figure is not shown a second time).

    Closing only concerns figures made with pyplot; a figure a dashboard keeps for its redraws is not
    one, so it stays usable. Introduced in notebook 05.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def show_png(fig, dpi: float | None = None) -> None:
    """Show ``fig`` once as a PNG, inside the current Output widget; outside IPython just close it.

    Same result as ``plt.show()`` with the inline backend, minus its ``bbox_inches="tight"`` pass
    (a second layout of every text): the figure has a fixed layout, and the redraw is faster.
    """
    png = figure_png(fig, dpi)  # closes the figure: the inline backend will not show it a second time
    if get_ipython() is not None:
        display(Image(data=png, format="png"))


class WithPngFallback:
    """Display ``widget`` where widgets run; a PNG of ``fig`` everywhere else (GitHub, nbviewer, HTML).

    Introduced in notebook 05 (the widget pattern of the course).
    """

    def __init__(self, widget, fig, dpi: float | None = None):
        self.widget = widget
        self.png = base64.b64encode(figure_png(fig, dpi)).decode("ascii")

    def _repr_mimebundle_(self, **kwargs):
        data = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(data, tuple):  # ipywidgets may return (data, metadata)
            data = data[0]
        data = dict(data)
        data["image/png"] = self.png
        return data


class Dashboard:
    """Base of the dashboards: ``controls`` (name -> widget), ``figure(**values)``, a PNG fallback.

    Subclasses build ``self.controls`` and implement ``figure``; ``_setup`` wires them with
    ``interactive_output``. A redraw shows ``_redraw(**values)``: by default a new ``figure``; a
    subclass may instead redraw one figure it keeps (``RoutingDashboard`` does, it is faster).
    ``renders`` counts redraws; ``step_through()`` moves every control through its range from the
    kernel side (the notebook's test cell), drawing each figure without sending it.
    ``quiet=True`` builds a dashboard that draws its figures but never shows them: the copy to step
    through. (Stepping a *displayed* dashboard makes its sliders jump in the browser, and a browser
    that lags behind can send a stale slider value back to the kernel after the stepping ended.)
    """

    min_height = "480px"
    dpi = 80  # pixels per inch of the redrawn PNG: sharp enough, and fewer pixels to draw and send
    css_class = "moe-dashboard"  # lets a browser test (or a stylesheet) find the dashboard on the page

    def _setup(self, layout, quiet: bool = False) -> None:
        self.renders = 0
        self._quiet = self.quiet = bool(quiet)
        self.output = widgets.interactive_output(self._draw, self.controls)
        self.output.layout.min_height = self.min_height  # reserve the space: no jump while redrawing
        self.box = widgets.VBox([layout, self.output])
        self.box.add_class(self.css_class)

    def values(self) -> dict:
        return {name: w.value for name, w in self.controls.items()}

    def figure(self, **values):
        raise NotImplementedError

    def _redraw(self, **values):
        """The figure a redraw shows for ``values``: a new one here (closed once shown)."""
        return self.figure(**values)

    def _draw(self, **values) -> None:
        fig = self._redraw(**values)
        self.renders += 1
        if self._quiet:  # stepping from the kernel: build every artist, send nothing
            plt.close(fig)  # a new pyplot figure is freed; a kept figure is not pyplot's: nothing happens
        else:
            show_png(fig, self.dpi)

    def _repr_mimebundle_(self, **kwargs):
        fig = self.figure(**self.values())
        return WithPngFallback(self.box, fig, self.dpi)._repr_mimebundle_(**kwargs)

    def control_values(self, name: str, max_values: int | None = None) -> list:
        """Every value control ``name`` can take now (a slider: min..max by its step)."""
        w = self.controls[name]
        if hasattr(w, "options"):
            vals = [o[1] if isinstance(o, tuple) else o for o in w.options]
        elif isinstance(w.value, bool):
            vals = [False, True]
        elif hasattr(w, "max"):
            count = int(round((w.max - w.min) / w.step)) + 1
            vals = [w.min + i * w.step for i in range(count)]
            if isinstance(w.value, int):
                vals = [int(v) for v in vals]
            else:
                vals = [round(v, 10) for v in vals]
        else:
            vals = [w.value]
        if max_values is not None and len(vals) > max_values:  # keep both ends and spread the rest
            pick = np.unique(np.linspace(0, len(vals) - 1, max_values).round().astype(int))
            vals = [vals[i] for i in pick]
        return vals

    def step_through(self, max_values: int | None = None) -> int:
        """Set every control to every value of its range (then back); returns the number of redraws.

        A callback that raises at some value fails here (and so in nbval), not in front of a learner.
        """
        start = self.values()
        before = self.renders
        self._quiet = True
        try:
            for name in self.controls:
                for v in self.control_values(name, max_values):
                    self.controls[name].value = v
                self.controls[name].value = start[name]
        finally:
            self._quiet = self.quiet
        for name, v in start.items():
            self.controls[name].value = v
        return self.renders - before
