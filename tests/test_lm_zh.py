"""Notebook 04's language-model figures and training progress bar in English and in Chinese (the ``zh`` tests
pass once the Chinese catalog has the messages of ``moe_lab.viz.lm`` and ``moe_lab.lm.training``)."""

import re
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from moe_lab import lm  # noqa: E402
from moe_lab.env import cjk_font  # noqa: E402
from moe_lab.lm.corpus import load_corpus  # noqa: E402
from moe_lab.viz import lm as lm_plots  # noqa: E402

HAN = re.compile(r"[\u4e00-\u9fff]")
TINY = lm.LMConfig(context=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                   num_experts=4, top_k=2, batch_size=4, lr=1e-2, balance="aux")


def fake_run(steps=12, layers=2, experts=4, seed=0):
    """A ``TrainResult`` with random loads (no training): the figures only read its arrays."""
    rng = np.random.default_rng(seed)
    load = rng.integers(0, 50, size=(steps, layers, experts))
    load[:, :, 0] += 1  # no all-zero row
    return lm.TrainResult(TINY, np.linspace(5, 3, steps), np.linspace(5, 3, steps), np.zeros(steps), load,
                          rng.uniform(0.01, 0.1, (steps, layers)), 0.01 * load.astype(float),
                          np.zeros((layers, experts)), 1.0, 0.5)


@pytest.fixture
def chinese_plots(zh):
    """Chinese messages and the CJK font ``moe_lab.setup(lang="zh")`` gives matplotlib (skips without one)."""
    font = cjk_font()
    if font is None:
        pytest.skip("no font with Chinese glyphs is installed (Debian: apt-get install fonts-wqy-microhei)")
    with matplotlib.rc_context({"font.sans-serif": [font, "DejaVu Sans"], "axes.unicode_minus": False}):
        yield


def missing_glyphs(fig) -> list[str]:
    """matplotlib's warnings about characters no font of the figure could draw (drawn as empty boxes)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_figures_speak_chinese(chinese_plots):
    """Axis labels, titles and the legends the package writes are Chinese; numbers and run names stay."""
    runs = {"none": fake_run(), "aux": fake_run(seed=1)}

    fig = lm_plots.plot_losses(runs, window=3)
    ax = fig.axes[0]
    assert all(HAN.search(t) for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())), ax.get_title()
    assert "3" in ax.get_title() and "nats" in ax.get_ylabel()
    assert legend_texts(ax)[:2] == ["none", "aux"]  # the runs' names are data
    assert HAN.search(legend_texts(ax)[2]) and "ln 256" in legend_texts(ax)[2]
    assert missing_glyphs(fig) == []
    plt.close(fig)

    fig = lm_plots.plot_load_shares(runs)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["none", "aux"]
    ylabels = [fig.axes[0].get_ylabel(), fig.axes[2].get_ylabel()]
    assert all(HAN.search(t) for t in ylabels) and "0" in ylabels[0] and "1" in ylabels[1], ylabels
    assert HAN.search(fig.axes[2].get_xlabel()) and HAN.search(fig.axes[3].get_xlabel())
    assert missing_glyphs(fig) == []
    plt.close(fig)

    fig = lm_plots.plot_router_gradients(runs, window=2)
    ax = fig.axes[0]
    assert all(HAN.search(t) for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()))
    assert "2" in ax.get_title() and "|" in ax.get_ylabel()
    assert missing_glyphs(fig) == []
    plt.close(fig)

    fig = lm_plots.plot_gradient_vs_load(runs["none"])
    ax = fig.axes[0]
    assert all(HAN.search(t) for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()))
    assert ax.get_title().startswith("aux")  # the run's balancing method (its config) stays as it is
    entries = legend_texts(ax)
    assert len(entries) == 2 and all(HAN.search(t) for t in entries) and "0" in entries[0] and "1" in entries[1]
    assert missing_glyphs(fig) == []
    plt.close(fig)


@pytest.fixture(scope="module")
def tiny_model():
    """One tiny model and its trainer (compiled once), shared by the progress-bar tests."""
    model = lm.TinyMoELM(TINY)
    return model, lm.Trainer(model), load_corpus()


def test_progress_bar_in_english(tiny_model, capsys):
    model, trainer, corpus = tiny_model
    lm.train(model, corpus, 2, trainer=trainer.reset(), desc="balance=aux")
    bar = capsys.readouterr().err
    assert "balance=aux" in bar and re.search(r"loss=\d+\.\d{3}", bar), bar


def test_progress_bar_in_chinese(tiny_model, capsys, zh):
    model, trainer, corpus = tiny_model
    lm.train(model, corpus, 2, trainer=trainer.reset())
    bar = capsys.readouterr().err
    assert re.search(r"损失=\d+\.\d{3}", bar) and "loss=" not in bar, bar
