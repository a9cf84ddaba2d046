"""moe_lab.core.anatomy and moe_lab.viz.anatomy (notebook 02): expert combinations against brute force, the
skill task and what training measures on it, output scales, group spans and bytes, router precision."""

import itertools
import math
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from moe_lab.core.anatomy import (  # noqa: E402
    SkillTask,
    cross_node_bytes,
    expert_combinations,
    expert_purity,
    group_span,
    output_rms,
    precision_flips,
    shared_fit,
    train_block,
)
from moe_lab.core.layer import MoELayer  # noqa: E402
from moe_lab.viz.anatomy import plot_block_routing, plot_training  # noqa: E402


@pytest.mark.parametrize("e, k, g, t", [(8, 2, 4, 1), (8, 3, 4, 2), (12, 4, 3, 2), (6, 2, 3, 3), (16, 4, 4, 4)])
def test_expert_combinations_equal_brute_force(e, k, g, t):
    size = e // g
    brute = sum(1 for s in itertools.combinations(range(e), k) if len({i // size for i in s}) <= t)
    assert expert_combinations(e, k, g, t) == brute


def test_expert_combinations_without_groups_and_bad_input():
    assert expert_combinations(8, 2) == 28 and expert_combinations(256, 8) == math.comb(256, 8)
    assert expert_combinations(256, 8, 8, 4) < expert_combinations(256, 8)
    with pytest.raises(ValueError, match="n_group must divide num_experts=10"):
        expert_combinations(10, 2, 4)
    with pytest.raises(ValueError, match="topk_group must be <= 4"):
        expert_combinations(8, 2, 4, 5)
    with pytest.raises(ValueError, match="top_k must be <= 8"):
        expert_combinations(8, 9)


def test_skill_task_targets_are_the_sum_of_the_tokens_skills():
    task = SkillTask(num_skills=6, skills_per_token=2, content_size=4, common=1.5, seed=2)
    x, y, common, skills = task.batch(np.random.default_rng(0), 50)
    assert x.shape == y.shape == common.shape == (50, task.hidden_size) and skills.shape == (50, 2)
    maps = task.maps()
    content = x[:, 6:]
    want = sum(np.tanh(np.einsum("nc,nch->nh", content, maps[skills[:, j]])) for j in range(2))
    np.testing.assert_allclose(y, want + 1.5 * np.tanh(content @ maps[6]), atol=1e-5)
    marked = np.sort(np.argsort(-x[:, :6], 1)[:, :2], 1)  # the code's two largest entries are the skills
    np.testing.assert_array_equal(marked, np.sort(skills, 1))
    with pytest.raises(ValueError, match="skills_per_token must be <= 6"):
        SkillTask(num_skills=6, skills_per_token=7)


def test_training_learns_and_fine_experts_specialise():
    task = SkillTask(seed=0)
    coarse = train_block(MoELayer(task.hidden_size, 16, 8, 1, norm_topk_prob=False, seed=1), task, steps=200)
    fine = train_block(MoELayer(task.hidden_size, 8, 16, 2, seed=1), task, steps=200)
    variance = task.batch(np.random.default_rng(0), 4096)[1].var()
    assert fine.val_loss < coarse.val_loss < variance  # both learn; the fine split learns more
    assert coarse.loss[-20:].mean() < coarse.loss[:20].mean()
    assert expert_purity(fine.layer, task) > expert_purity(coarse.layer, task) + 0.2
    with pytest.raises(ValueError, match="layer.hidden_size must be the task's 32"):
        train_block(MoELayer(16, 8, 4, 2), task, steps=1)


def test_shared_expert_takes_the_common_skill():
    task = SkillTask(common=2.0, seed=0)
    run = train_block(MoELayer(task.hidden_size, 8, 15, 2, n_shared_experts=1, seed=1), task, steps=200)
    assert shared_fit(run.layer, task) > 0.2
    with pytest.raises(ValueError, match="no shared experts"):
        shared_fit(MoELayer(task.hidden_size, 8, 4, 2), task)


def test_output_rms_follows_the_scaling_factor():
    layer = MoELayer(16, 8, 16, 4, scoring_func="sigmoid", routed_scaling_factor=2.5, n_shared_experts=1, seed=0)
    x = ms.Tensor(np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32))
    scaled = output_rms(layer, x)
    layer.router.routed_scaling_factor = 1.0
    plain = output_rms(layer, x)
    assert scaled["routed"] == pytest.approx(2.5 * plain["routed"], rel=1e-5)
    assert scaled["shared"] == plain["shared"] and scaled["input"] == pytest.approx(1.0, rel=0.2)
    assert "shared" not in output_rms(MoELayer(16, 8, 4, 2), x)


def test_group_span_and_cross_node_bytes():
    indices = np.array([[0, 1, 2, 3], [0, 4, 8, 12], [15, 14, 13, 12]])
    np.testing.assert_array_equal(group_span(indices, 16, 4), [1, 4, 1])
    sent = cross_node_bytes(indices, 16, 4, hidden_size=10, bytes_per_value=2, seed=0)
    home = np.random.default_rng(0).integers(0, 4, 3)
    nodes = indices // 4
    want = [len(set(row) - {h}) * 20 for row, h in zip(nodes, home, strict=True)]
    np.testing.assert_array_equal(sent, want)
    with pytest.raises(ValueError, match="n_group must divide num_experts=16"):
        group_span(indices, 16, 5)


def test_group_limit_bounds_the_nodes_a_token_reaches():
    x = ms.Tensor(np.random.default_rng(5).normal(size=(512, 32)).astype(np.float32))
    limited = MoELayer(32, 8, 64, 8, scoring_func="sigmoid", n_group=8, topk_group=3, seed=2)
    free = MoELayer(32, 8, 64, 8, scoring_func="sigmoid", seed=2)
    assert group_span(limited.route(x).indices, 64, 8).max() <= 3
    assert group_span(free.route(x).indices, 64, 8).max() > 3
    assert cross_node_bytes(limited.route(x).indices, 64, 8, 100).mean() < \
        cross_node_bytes(free.route(x).indices, 64, 8, 100).mean()


def test_precision_flips():
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(256, 512)), rng.normal(size=(512, 64)) / np.sqrt(512)
    assert precision_flips(x, w, 4, "float32") == 0.0  # the reference against itself
    bf16, fp16 = precision_flips(x, w, 4, "bfloat16"), precision_flips(x, w, 4, "float16")
    assert bf16 > fp16 and bf16 > 0.01
    with pytest.raises(ValueError, match="dtype must be one of 'float32', 'float16', 'bfloat16'"):
        precision_flips(x, w, 4, "int8")


def test_figures():
    fig = plot_block_routing(np.array([[0, 9], [3, 30], [17, 18]]), 32, 4)
    ax = fig.axes[0]
    assert len(ax.collections) == 2  # routed dots and the shared column
    assert ax.collections[0].get_offsets().shape == (6, 2)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["chosen routed expert", "shared expert", "a group the token uses"]
    plt.close(fig)
    with pytest.raises(ValueError, match="indices must be in \\[0, 7\\]"):
        plot_block_routing(np.array([[0, 9]]), 8, 2)
    with pytest.raises(ValueError, match="at least one token"):
        plot_block_routing(np.zeros((0, 2), int), 8, 2)
    fig = plot_training({"a": np.linspace(1, 0, 50), "b": np.linspace(2, 1, 50)}, window=10)
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[0].lines[0].get_xdata()) == 41
    plt.close(fig)
    with pytest.raises(TypeError, match="non-empty dict"):
        plot_training({})


def legend_covers_the_x_label(fig) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return ax.get_legend().get_window_extent(renderer).overlaps(ax.xaxis.label.get_window_extent(renderer))


def test_block_routing_legend_sits_under_the_x_label():
    """At (0.5, -0.12) of the axes the legend covered the x label of a figure of 3 tokens."""
    for rows in (3, 16):
        fig = plot_block_routing(np.arange(2 * rows).reshape(rows, 2) % 32, 32, 4)
        assert not legend_covers_the_x_label(fig), rows
        plt.close(fig)


HAN = re.compile(r"[\u4e00-\u9fff]")


def test_figures_speak_chinese(zh_plots):
    for shared, groups in ((True, 4), (False, 1)):
        fig = plot_block_routing(np.array([[0, 9], [3, 30], [17, 18]]), 32, groups, shared=shared)
        ax = fig.axes[0]
        texts = [ax.get_title(), ax.get_xlabel(), *(t.get_text() for t in ax.get_legend().get_texts())]
        assert all(HAN.search(t) for t in texts), texts
        assert "31" in ax.get_xlabel() and ("4" in ax.get_xlabel()) == (groups == 4)
        assert not legend_covers_the_x_label(fig)
        plt.close(fig)
    fig = plot_training({"a": np.linspace(1, 0, 50)}, window=10)
    ax = fig.axes[0]
    assert all(HAN.search(t) for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()))
    assert "10" in ax.get_title()
    plt.close(fig)
