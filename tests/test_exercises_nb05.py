"""Checkers of notebook 05 and of the expert-load app: right answers pass, typical wrong ones get a
message that says what is wrong."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from moe_lab.exercises import nb05  # noqa: E402
from moe_lab.lm import CHECKPOINT_DIR, DOMAINS  # noqa: E402
from moe_lab.viz.dashboards import RoutingDashboard  # noqa: E402
from moe_lab.viz.simulate import simulate_routing  # noqa: E402


@pytest.mark.parametrize("checker", [nb05.check_capacity, nb05.check_min_capacity_factor, nb05.check_temperature,
                                     nb05.check_chinese_top_share, nb05.check_app_max_mean,
                                     nb05.check_app_best_balancing])
def test_placeholder_is_unanswered(checker):
    fb = checker(None)
    assert not fb and "no answer yet" in fb.message


def test_capacity():
    # 1000 tokens, 16 experts, top-2, capacity factor 1.1: ceil(1.1 * 1000 * 2 / 16) = ceil(137.5)
    assert nb05.check_capacity(138)
    assert "balanced load" in nb05.check_capacity(125).message
    assert "forgets top-k" in nb05.check_capacity(69).message
    assert "round up (ceil)" in nb05.check_capacity(137.5).message
    assert "rounds down" in nb05.check_capacity(137).message
    assert "too large" in nb05.check_capacity(139).message
    assert not nb05.check_capacity("138")


def test_capacity_answer_is_not_a_setting_the_notebook_draws():
    """The notebook's pictures show 512 tokens; exercise 1 must not be readable off them."""
    assert nb05.EX1["num_tokens"] != 512


def test_min_capacity_factor_is_the_first_dropless_grid_point():
    best = nb05.smallest_dropless_factor()
    args = nb05.EX2
    drops = [simulate_routing(args["num_tokens"], args["num_experts"], args["top_k"], cf, skew=args["skew"],
                              seed=args["seed"]).dropped() for cf in nb05.CAPACITY_GRID]
    first = nb05.CAPACITY_GRID[next(i for i, d in enumerate(drops) if d == 0)]
    assert best == first and best > 1.0  # skewed input: the plain factor 1.0 is not enough
    assert nb05.check_min_capacity_factor(best)
    assert "still drop" in nb05.check_min_capacity_factor(best - 0.25).message
    assert "go lower" in nb05.check_min_capacity_factor(best + 0.5).message
    assert "not on the slider's grid" in nb05.check_min_capacity_factor(1.3).message
    assert "expected a number" in nb05.check_min_capacity_factor("1.5").message


def test_temperature():
    assert nb05.check_temperature(False)
    assert not nb05.check_temperature(True)
    assert "True or False" in nb05.check_temperature("no").message


def test_app_max_mean_is_what_the_dashboard_shows():
    fig = RoutingDashboard(num_tokens=512, seed=0).figure(**nb05.APP1)
    shown = float(re.search(r"max/mean (\d+\.\d\d)", fig.axes[0].get_title()).group(1))
    plt.close("all")
    assert shown == nb05.app_max_mean()
    assert nb05.check_app_max_mean(shown)
    assert nb05.check_app_max_mean(shown + 0.004)
    assert not nb05.check_app_max_mean(shown + 0.02)
    assert "perfect balance" in nb05.check_app_max_mean(1.0).message


def test_app_best_balancing():
    best = nb05.app_best_balancing()
    other = {"aux": "bias", "bias": "aux"}[best]
    assert nb05.check_app_best_balancing(best) and nb05.check_app_best_balancing(f" {best.upper()} ")
    assert "ends higher" in nb05.check_app_best_balancing(other).message
    assert "answer 'aux' or 'bias'" in nb05.check_app_best_balancing("none").message


def test_chinese_top_share():
    if not (CHECKPOINT_DIR / "model.ckpt").exists():
        print(f"skipped: the trained checkpoint {CHECKPOINT_DIR.name}/model.ckpt is missing (make checkpoint)")
        pytest.skip(f"the trained checkpoint {CHECKPOINT_DIR.name}/model.ckpt is missing (make checkpoint)")
    counts, top_k = nb05.model_domain_counts()
    chinese = counts[-1][DOMAINS.index("chinese")]
    share = 100 * chinese.max() / chinese.sum()
    assert share <= 100 / top_k + 1e-9  # k slots per token, to k different experts
    assert nb05.check_chinese_top_share(round(share))
    assert nb05.check_chinese_top_share(share + 0.9)
    fb = nb05.check_chinese_top_share(100 / top_k + 5)  # e.g. a first-choice share read off the heatmap
    assert not fb and "first choices only" in fb.message
    assert "looks like a fraction" in nb05.check_chinese_top_share(share / 100).message
    assert "not the busiest expert's share" in nb05.check_chinese_top_share(share - 10).message
    assert "expected a percentage" in nb05.check_chinese_top_share("37").message


def test_feedback_in_chinese(zh):
    fb = nb05.check_capacity(125)
    assert not fb and fb.message.startswith("125 是均衡负载 N*k/E；容量因子 1.1")
    assert "1.3 不在滑块的取值网格上" in nb05.check_min_capacity_factor(1.3).message
    assert str(nb05.check_temperature("no")) == "[温度] 还不对：请回答 True 或 False，但得到的是 'no'。"
