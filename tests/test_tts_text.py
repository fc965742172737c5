"""Text handling a listener notices: numbers read the right way, sentences split, clear refusals."""

import pytest

from common.errors import UserFacingError
from tts.text import check_text, detect_language, normalize, split_sentences


@pytest.mark.parametrize("text, expected", [
    ("请拨打12345热线咨询。", "请拨打幺二三四五热线咨询。"),                        # hotline: digit by digit
    ("费用是12345元。", "费用是一万二千三百四十五元。"),                          # amount: as a number
    ("2024年3月5日起办理", "二零二四年三月五日起办理"),                              # date
    ("2024-03-05起办理", "二零二四年三月五日起办理"),                                # ISO date
    ("利率为3.5%", "利率为百分之三点五"),                                          # percentage
    ("约3-5个工作日", "约三至五个工作日"),                                          # range, not minus
    ("服务时间9:30至17:00", "服务时间九点三十分至十七点"),                          # clock time
    ("电话010-12345678", "电话零幺零幺二三四五六七八"),                             # phone number
    ("共12,345人", "共一万二千三百四十五人"),
    ("请带好**身份证**【原件】", "请带好身份证原件"),                                # markup is not read
])
def test_normalize_zh(text, expected):
    assert normalize(text, "zh") == expected


@pytest.mark.parametrize("text, expected", [
    ("Call the 12345 hotline.", "Call the one two three four five hotline."),
    ("It costs 12345 yuan.", "It costs twelve thousand three hundred and forty-five yuan."),
    ("From 2024-03-05 on.", "From March fifth, twenty twenty-four on."),
    ("The rate is 3.5%.", "The rate is three point five percent."),
    ("Open 9:30 to 17:00.", "Open nine thirty to seventeen o'clock."),
    ("It takes 3-5 days.", "It takes three to five days."),
    ("It costs $12.50.", "It costs twelve dollars and fifty cents."),
    ("Dial 400-123-4567 now", "Dial four zero zero one two three four five six seven now"),
])
def test_normalize_en(text, expected):
    assert normalize(text, "en") == expected


def test_split_sentences_zh_and_en_punctuation_keeps_decimals():
    parts = split_sentences("您好，请问有什么可以帮您？利率是3.5%。Thanks! OK", "zh")
    assert parts == ["您好，请问有什么可以帮您？", "利率是3.5%。", "Thanks!", "OK"]
    assert split_sentences("Hello there. The rate is 3.5 percent! Is it ok?", "en") == [
        "Hello there.", "The rate is 3.5 percent!", "Is it ok?"]


def test_long_sentence_is_cut_at_clauses_then_hard():
    text = "这" * 50 + "，" + "那" * 50 + "。" + "长" * 130
    parts = split_sentences(text, "zh", max_len=60)
    assert all(len(p) <= 60 for p in parts)
    assert "".join(parts) == text


def test_detect_language():
    assert detect_language("您好，请问有什么可以帮您？") == "zh"
    assert detect_language("Hello, how can I help you?") == "en"
    assert detect_language("请上传PDF文件") == "zh"


@pytest.mark.parametrize("bad", ["", "   ", None, "。。！"])
def test_empty_text_is_refused_clearly(bad):
    with pytest.raises(UserFacingError, match="(empty|nothing to read)"):
        check_text(bad)


def test_over_long_text_is_refused_with_the_limit():
    with pytest.raises(UserFacingError, match=r"too long.*1201 characters.*limit is 1200"):
        check_text("好" * 1201, max_chars=1200)
    assert check_text(" 好 ", max_chars=1) == "好"
