"""Notebook-07 exercise checkers: right answers pass, typical mistakes get a specific hint."""

import pytest

from moe_lab.exercises import nb07


def test_right_answers():
    assert nb07.check_expert_params(3 * 7680 * 2048)
    assert nb07.check_kv_bytes_per_token((512 + 64) * 61 * 2)
    assert nb07.check_min_npus(25)
    assert nb07.check_scout_kv_bytes(12 * 4096 * 131072 + 36 * 4096 * 8192)
    assert nb07.expert_answer() == 47_185_920 and nb07.kv_answer() == 70_272 and nb07.npu_answer() == 25
    assert nb07.scout_kv_answer() == 7_650_410_496


@pytest.mark.parametrize("check", [nb07.check_expert_params, nb07.check_kv_bytes_per_token, nb07.check_min_npus,
                                   nb07.check_scout_kv_bytes])
def test_placeholders_and_wrong_types(check):
    for placeholder in (None, ...):
        fb = check(placeholder)
        assert not fb and "no answer yet" in fb.message
    assert "expected a number" in check("47").message
    assert "expected a number" in check(True).message


@pytest.mark.parametrize("check, answer, hint", [
    (nb07.check_expert_params, 2 * 7680 * 2048, "three"),
    (nb07.check_expert_params, 7680 * 2048, "one projection"),
    (nb07.check_expert_params, 3 * 7680 * 2048 * 58, "58 MoE layers"),
    (nb07.check_expert_params, 3 * 7680 * 2048 * 256, "all 256"),
    (nb07.check_expert_params, 10, "too small"),
    (nb07.check_kv_bytes_per_token, 512 * 61 * 2, "RoPE key"),
    (nb07.check_kv_bytes_per_token, 576 * 61, "2 bytes"),
    (nb07.check_kv_bytes_per_token, 576 * 2, "one layer"),
    (nb07.check_kv_bytes_per_token, 2 * 128 * 128 * 61 * 2, "multi-head attention"),
    (nb07.check_min_npus, 23, "keep 10 %"),
    (nb07.check_min_npus, 24, "round up"),
    (nb07.check_min_npus, 26, "MTP"),
    (nb07.check_min_npus, 50, "2 bytes"),
    (nb07.check_min_npus, 40, "too large"),
    (nb07.check_scout_kv_bytes, 48 * 4096 * 131072, "every layer"),
    (nb07.check_scout_kv_bytes, 48 * 4096 * 8192, "every 4th layer"),
    (nb07.check_scout_kv_bytes, 36 * 4096 * 131072 + 12 * 4096 * 8192, "other way round"),
    (nb07.check_scout_kv_bytes, 7_650_410_496 // 2, "a key AND a value"),
    (nb07.check_scout_kv_bytes, 7_650_410_496 * 5, "query heads"),
    (nb07.check_scout_kv_bytes, 1000, "too small"),
])
def test_typical_mistakes_get_a_hint(check, answer, hint):
    fb = check(answer)
    assert not fb.correct
    assert hint in fb.message


def test_feedback_writes_integers_in_full():
    for fb in (nb07.check_scout_kv_bytes(7_650_410_496), nb07.check_scout_kv_bytes(25_769_803_776),
               nb07.check_expert_params(10)):
        assert "e+" not in fb.message


def test_feedback_in_chinese(zh):
    fb = nb07.check_min_npus(24)
    assert not fb and fb.message == "24——要向上取整：不足一个 NPU 也得用一整个。"
    assert nb07.check_kv_bytes_per_token(576 * 2).message == "1,152——这只是一层；模型共有 61 层。"
    assert str(nb07.check_expert_params(10)) == "[单个专家的参数量] 还不对：10 太小了。"
