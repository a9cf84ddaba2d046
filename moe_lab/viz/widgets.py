"""The widget pattern of the course: one PNG per redraw, a PNG fallback, a fast kept figure, ``Dashboard``.

Introduced in notebook 05. Measured in JupyterLab 4.6, Voila 0.5 and static HTML: inline backend, one
PNG shown per redraw, a fixed figure size and fixed axes, a reserved height so nothing jumps while
redrawing, and a PNG fallback in the display bundle so the notebook shows a real picture where widgets
cannot run (GitHub, nbviewer, exported HTML, a freshly cloned untrusted notebook). Every dashboard of
the package (``moe_lab.viz.dashboards``, ``moe_lab.viz.ep``, ``moe_lab.viz.budget``) builds on this module.
"""

from __future__ import annotations

import base64
import io
import time
from html import escape as html_escape

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from IPython import get_ipython
from IPython.display import Image, clear_output, display
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from PIL import Image as PILImage

from moe_lab.i18n import _


def figure_png(fig, dpi: float | None = None) -> bytes:
    """PNG bytes of ``fig`` (then closed: the figure is not shown a second time).

    Closing only concerns figures made with pyplot; a figure a dashboard keeps for its redraws is not
    one, so it stays usable. Introduced in notebook 05.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def rgba_png(rgba, compress_level: int = 1) -> bytes:
    """PNG bytes of an ``[H, W, 4]`` uint8 picture (a canvas buffer).

    zlib level 1 instead of matplotlib's 6: on the routing dashboard's 800 x 528 picture it encodes in
    8.4 ms instead of 12.0 ms for the same size (68 kB; medians of 30 encodes on the course's 2-core
    machine). Dropping the (opaque) alpha channel saves 10% of the bytes but costs a 1.7 ms copy,
    more than those bytes cost on a local socket.
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"rgba must be an [H, W, 4] uint8 array, got shape {rgba.shape} and dtype {rgba.dtype}")
    buf = io.BytesIO()
    PILImage.fromarray(rgba).save(buf, format="png", compress_level=compress_level)
    return buf.getvalue()


def show_png_bytes(png: bytes) -> None:
    """Display PNG bytes once (inside the current Output widget); outside IPython do nothing."""
    if get_ipython() is not None:
        display(Image(data=png, format="png"))


class WithPngFallback:
    """Display ``widget`` where widgets run; a PNG everywhere else (GitHub, nbviewer, HTML).

    ``picture`` is a matplotlib figure (saved, then closed) or PNG bytes. Introduced in notebook 05.
    """

    def __init__(self, widget, picture, dpi: float | None = None):
        self.widget = widget
        png = picture if isinstance(picture, bytes) else figure_png(picture, dpi)
        self.png = base64.b64encode(png).decode("ascii")

    def _repr_mimebundle_(self, **kwargs):
        data = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(data, tuple):  # ipywidgets may return (data, metadata)
            data = data[0]
        data = dict(data)
        data["image/png"] = self.png
        return data


# ---------------------------------------------------------------------------------------------
# a figure redrawn in place, fast


def data_artists(ax) -> list:
    """What a plot function draws on ``ax``: every child except the axes' patch, spines, axis objects
    (ticks, tick labels, axis labels, grid) and legend. Titles are included."""
    static = {id(ax.patch), *(id(s) for s in ax.spines.values())}
    return [a for a in ax.get_children()
            if id(a) not in static and not isinstance(a, (Axis, Legend)) and a not in ax.child_axes]


def frame_key(fig) -> tuple:
    """What the static part of ``fig`` looks like: size, and per axes its box, limits, tick positions,
    fixed tick labels, axis labels and legend entries (by label). Equal keys, equal static picture:
    tick labels are a function of positions and limits for matplotlib's default formatters, and a
    plot function of ``moe_lab.viz.figures`` gives a legend entry the same look for the same label."""
    key = [tuple(fig.get_size_inches()), fig.dpi]
    for ax in fig.axes:
        legend = ax.get_legend()
        axis_state = []
        for axis in (ax.xaxis, ax.yaxis):
            fmt = axis.get_major_formatter()
            axis_state.append((tuple(axis.get_view_interval()), tuple(axis.get_majorticklocs()),
                               tuple(getattr(fmt, "seq", ()) or ()), axis.get_label_text()))
        key.append((ax.get_position().bounds, ax.axison, tuple(axis_state),
                    None if legend is None else tuple(t.get_text() for t in legend.get_texts())))
    return tuple(key)


def axis_below_data(fig) -> None:
    """Put every axis of ``fig`` (ticks, tick labels, grid) below every artist (zorder -1).

    Needed by ``KeptFigure`` (the axis is drawn once, under the data); call it on a figure that
    must look the same, too: the grid then runs under the bars instead of over them.
    """
    for ax in fig.axes:
        ax.xaxis.set_zorder(-1)
        ax.yaxis.set_zorder(-1)


class KeptFigure:
    """A figure that a dashboard draws again on every slider move; ``render()`` returns its PNG.

    Introduced in notebook 05. Most of a full draw is static: the axes' ticks, tick labels and
    axis labels took 50% of the routing dashboard's draw time and its legends 16% (cProfile of 10
    draws), and they only change when a limit, a tick or a legend changes. So the first
    ``render()``, and any render after ``frame_key`` changed, draws the whole figure with the data
    artists hidden, keeps that picture (the "background"), then draws the data artists on it; the
    other renders paste the background back and draw only the data artists (``data_artists`` of
    each axes and the figure's texts).

    The result equals a full draw of the figure pixel for pixel (a test checks it) when:
    nothing static inside an axes is drawn above the data (``axis_below_data`` puts every axis, its
    ticks and grid at zorder -1, below every artist), legends do not overlap anything drawn by a plot
    function (``figures.legend_below`` puts them under the axes), and the spines, drawn above the
    data in a full draw, are drawn again after the data here at their place in the z-order.
    """

    def __init__(self, figsize: tuple[float, float], dpi: float, compress_level: int = 1):
        self.figure = Figure(figsize=figsize, dpi=dpi)  # not pyplot's: the inline backend never shows it
        FigureCanvasAgg(self.figure)
        self.compress_level = compress_level
        self._background = None
        self._key = None
        self.full_draws = 0  # renders that drew the whole figure
        self.fast_draws = 0  # renders that pasted the background and drew the data only

    def _layers(self):
        """Per axes: the data artists and spines in the order a full draw uses; then the figure's texts."""
        layers = []
        for ax in self.figure.axes:
            drawn = {id(a) for a in data_artists(ax)} | {id(s) for s in ax.spines.values()}
            children = [a for a in ax.get_children() if id(a) in drawn]
            layers.append(sorted(children, key=lambda a: a.zorder))  # stable, like Axes.draw
        return layers, sorted(self.figure.texts, key=lambda a: a.zorder)

    def rgba(self) -> np.ndarray:
        """The picture as an ``[H, W, 4]`` uint8 array (a view of the canvas: copy it to keep it)."""
        canvas = self.figure.canvas
        layers, figure_texts = self._layers()
        key = frame_key(self.figure)
        if key != self._key or self._background is None:
            # hide the data: texts by a zero alpha (a hidden title would be misplaced: Axes.draw lays the
            # titles out from their extents, and a hidden text has none), other artists by visibility
            shown = [a for layer in layers for a in layer if a.get_visible()] + [t for t in figure_texts
                                                                                 if t.get_visible()]
            texts = [(a, a.get_alpha()) for a in shown if isinstance(a, Text)]
            others = [a for a in shown if not isinstance(a, Text)]
            for a in others:
                a.set_visible(False)
            for a, _alpha in texts:
                a.set_alpha(0.0)
            try:
                canvas.draw()
            finally:
                for a in others:
                    a.set_visible(True)
                for a, alpha in texts:
                    a.set_alpha(alpha)
            self._background = canvas.copy_from_bbox(self.figure.bbox)
            self._key = key
            self.full_draws += 1
        else:
            canvas.restore_region(self._background)
            self.fast_draws += 1
        renderer = canvas.get_renderer()
        for layer in layers:
            for artist in layer:
                artist.draw(renderer)
        for text in figure_texts:
            text.draw(renderer)
        return np.asarray(canvas.buffer_rgba())

    def render(self) -> bytes:
        """The PNG of the figure as it is now."""
        return rgba_png(self.rgba(), self.compress_level)


# ---------------------------------------------------------------------------------------------
# the dashboards' base


class Dashboard:
    """Base of the dashboards: ``controls`` (name -> widget), ``figure(**values)``, a PNG fallback.

    Subclasses build ``self.controls`` and implement ``figure``; ``_setup`` lays them out with an
    Output widget and redraws on every control change. A redraw shows ``render_png(**values)``: by
    default the PNG of a new ``figure``; a subclass may render a figure it keeps instead
    (``RoutingDashboard`` does: it is several times faster). ``renders`` counts redraws, ``timings``
    keeps the seconds each took in the kernel (values -> PNG shown). ``step_through()`` moves every
    control through its range from the kernel side (the tests use it). ``quiet=True`` builds a
    dashboard that renders its pictures but never shows them: the copy to step through. (Stepping a
    *displayed* dashboard makes its sliders jump in the browser, and a browser that lags behind can
    send a stale slider value back to the kernel after the stepping ended.)
    """

    min_height = "480px"
    dpi = 80  # pixels per inch of the redrawn PNG: sharp enough, and fewer pixels to draw and send
    css_class = "moe-dashboard"  # lets a browser test (or a stylesheet) find the dashboard on the page

    def _setup(self, layout, quiet: bool = False) -> None:
        self.renders = 0
        self.timings: list[float] = []
        self._quiet = self.quiet = bool(quiet)
        self.output = widgets.Output()
        self.output.layout.min_height = self.min_height  # reserve the space: no jump while redrawing
        self.box = widgets.VBox([layout, self.output])
        self.box.add_class(self.css_class)
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    def values(self) -> dict:
        return {name: w.value for name, w in self.controls.items()}

    def figure(self, **values):
        raise NotImplementedError

    def render_png(self, **values) -> bytes:
        """The PNG a redraw shows for ``values``: a new ``figure`` here (closed once saved)."""
        return figure_png(self.figure(**values), self.dpi)

    def _on_change(self, change) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Render the current values and show the PNG in the output area (an error shows there too)."""
        with self.output:
            start = time.perf_counter()
            png = self.render_png(**self.values())
            self.renders += 1
            if not self._quiet:  # stepping from the kernel renders every picture but sends none
                clear_output(wait=True)
                show_png_bytes(png)
            self.timings.append(time.perf_counter() - start)
            del self.timings[:-200]

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

        A callback that raises at some value fails here (in a test), not in front of a learner.
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
        for name in self.controls:
            self.controls[name].value = start[name]
        return self.renders - before


# ---------------------------------------------------------------------------------------------
# an exercise answered in a page without code cells (the Voila app)


def parse_answer(text: str):
    """What a learner typed, as the checker wants it: ``None`` if empty, a number if it reads as one
    (an ``int`` when whole: ``"3"`` -> 3, ``"1.50"`` -> 1.5), ``True``/``False``, else the stripped text."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = text.strip()
    if not text:
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    if not np.isfinite(number):
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


class ExerciseBox:
    """One exercise as widgets: the question, an answer box, a "check" button and the checker's verdict.

    ``check`` is an exercise checker (``moe_lab.exercises.nbNN.check_*``: answer -> ``Feedback``). Enter
    in the box or the button checks the answer (``parse_answer`` turns the text into a number, a
    bool or a string). Introduced in the expert-load app, which has no code cell to answer in.
    """

    css_class = "moe-exercise"

    def __init__(self, question: str, check, placeholder: str | None = None):
        if not callable(check):
            raise TypeError(f"check must be a checker function (answer -> Feedback), got {type(check).__name__}")
        self.check = check
        self.question = widgets.HTML(value=question)
        self.answer = widgets.Text(value="", placeholder=_("your answer") if placeholder is None else placeholder,
                                   continuous_update=False, layout=widgets.Layout(width="200px"))
        # i18n: the button that sends the answer to the checker
        self.button = widgets.Button(description=_("check"), layout=widgets.Layout(width="90px"))
        self.feedback = widgets.HTML(value="")
        self.answer.observe(self._on_check, names="value")  # Enter (or leaving the box) sends the text
        self.button.on_click(self._on_check)
        self.box = widgets.VBox([self.question, widgets.HBox([self.answer, self.button]), self.feedback])
        self.box.add_class(self.css_class)
        self.last = None  # the last Feedback shown

    def _on_check(self, *_args) -> None:
        answer = parse_answer(self.answer.value)
        if answer is None:  # the checkers' own message asks to edit a cell: there is none here
            self.last = None
            self.feedback.value = html_escape(_("type an answer in the box first."))
            return
        fb = self.check(answer)
        self.last = fb
        color = "#2ca02c" if fb else "#d62728"
        # i18n: the verdict words, the same as in the checkers' one-line feedback (moe_lab.exercises)
        mark = _("right") if fb else _("not yet")
        verdict = f'<span style="color:{color}"><b>{html_escape(mark)}</b></span>'
        # i18n: the answer box's feedback: the verdict (coloured), then the checker's message
        self.feedback.value = _("{verdict}: {message}").format(verdict=verdict, message=html_escape(fb.message))

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)
