"""moe_lab.textfmt: display width (a Chinese character takes two columns), padding by it, counted nouns."""

import pytest

from moe_lab.i18n import N_
from moe_lab.textfmt import counted, ljust, plural, rjust, width


@pytest.mark.parametrize("text, columns", [("", 0), ("rank", 4), ("专家", 4), ("发送 KiB", 8), ("（cf 1.25）", 11),
                                           ("e\u0301", 1)])
def test_width_counts_display_columns(text, columns):
    assert width(text) == columns


def test_padding_matches_str_on_ascii_and_counts_columns_on_chinese():
    for text in ("rank", "sent KiB", "0-3", ""):
        assert ljust(text, 9) == text.ljust(9) and rjust(text, 9) == text.rjust(9)
    assert ljust("专家", 8) == "专家    " and rjust("行数", 5) == " 行数"
    assert width(ljust("填充行", 7)) == width(rjust("填充行", 7)) == 7
    assert ljust("每个专家的行数", 4) == "每个专家的行数"  # never cut


def test_counted_picks_the_english_form_and_fills_the_fields():
    one, many = N_("{n} rank"), N_("{n} ranks")
    assert [counted(1, one, many), counted(2, one, many), counted(0, one, many)] == ["1 rank", "2 ranks", "0 ranks"]
    assert counted(3, "{n} of {total}", "{n} of {total}", total=8) == "3 of 8"


def test_counted_in_chinese_has_one_form(zh):
    assert counted(1, N_("{n} rank"), N_("{n} ranks")) == "1 个 rank"
    assert counted(17, N_("{n} token"), N_("{n} tokens")) == "17 个 token"


def test_plural_adds_an_english_s_and_leaves_other_languages_alone():
    assert [plural(1, "node"), plural(4, "node"), plural(1000, "device")] == ["1 node", "4 nodes", "1,000 devices"]
    assert [plural(1, "个节点"), plural(4, "个节点")] == ["1 个节点", "4 个节点"]
