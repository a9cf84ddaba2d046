"""Notebook-06 exercise checkers: right answers pass, typical mistakes get a specific hint."""

import pytest

from moe_lab.exercises import nb07


def test_right_answers():
    assert nb07.check_expert_params(3 * 7680 * 2048)
    assert nb07.check_kv_bytes_per_token((512 + 64) * 61 * 2)
    assert nb07.check_min_npus(25)
    assert nb07.expert_answer() == 47_185_920 and nb07.kv_answer() == 70_272 and nb07.npu_answer() == 25


@pytest.mark.parametrize("check", [nb07.check_expert_params, nb07.check_kv_bytes_per_token, nb07.check_min_npus])
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
])
def test_typical_mistakes_get_a_hint(check, answer, hint):
    fb = check(answer)
    assert not fb.correct
    assert hint in fb.message
