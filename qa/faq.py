"""Bring your own FAQ: validate an uploaded CSV / JSONL / JSON file, build an Assistant for it, calibrate it.

The domain half of "try your own FAQ without redeploying" (the app keeps one such Assistant per browser session):

    kb = load_faq(path, max_mb=settings.faq_max_mb, max_entries=settings.faq_max_entries)
    a = build_faq_assistant(kb, builtin.embedder, progress=lambda f, msg: ...)   # new Assistant, own index
    a2, report = calibrate_with_questions(a, "my_test_questions.jsonl")           # new Assistant, calibrated

Columns: ``question`` and ``answer`` (required), optional ``phrasings`` (other ways users ask: a JSON list, or
one text separated by ``|`` or line breaks) and the optional fields of :mod:`qa.kb` (id, category, English
fields). Every problem is reported at once with its line (or record) and field.

Uncalibrated default: an uploaded FAQ gets :data:`qa.assistant.UNCALIBRATED` (documented in qa/README.md, measured
on sub-samples of the built-in KB without its phrasings and English fields, the shape a typical uploaded FAQ has).
"Calibrate with my test questions" re-chooses the three numbers on the user's own questions.

Nothing here keeps state between calls: each call returns new objects, so sessions cannot leak into each other.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from common.errors import UserFacingError
from qa.assistant import Assistant, AssistantConfig, Calibration
from qa.embed import Embedder
from qa.index import Progress
from qa.kb import KnowledgeBase, load_kb

SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
MIN_TEST_QUESTIONS = 5  # answerable test questions needed to calibrate


def load_faq(path: str | Path, *, max_mb: float, max_entries: int) -> KnowledgeBase:
    """Validate an uploaded FAQ file (size, type, every record) -> KnowledgeBase named after the file."""
    p = Path(path)
    if not p.is_file():
        raise UserFacingError("FAQ upload: the file was not received; please upload it again.")
    if p.suffix.lower() not in SUFFIXES:
        raise UserFacingError(f"FAQ {p.name}: unsupported file type {p.suffix or '(none)'}; upload a .csv, .jsonl or "
                              "a .json file with the columns 'question' and 'answer' (optional: 'phrasings').")
    size = p.stat().st_size
    if size == 0:
        raise UserFacingError(f"FAQ {p.name} is empty (0 bytes).")
    if size > max_mb * 1024 * 1024:
        raise UserFacingError(f"FAQ {p.name} is {size / 1024 / 1024:.1f} MB; the limit is {max_mb:g} MB. "
                              "Split it or remove long answers.")
    kb = load_kb(p)
    if len(kb) > max_entries:
        raise UserFacingError(f"FAQ {p.name} has {len(kb)} entries; the limit is {max_entries}. Upload fewer entries.")
    return replace(kb, source=f"uploaded: {p.name}")


def build_faq_assistant(faq: KnowledgeBase | str | Path, embedder: Embedder, *, max_mb: float | None = None,
                        max_entries: int | None = None, cache_dir: Path | None = None,
                        progress: Progress | None = None, config: AssistantConfig | None = None) -> Assistant:
    """A new Assistant for an uploaded FAQ (a validated KB, or a path validated here with the limits).

    ``embedder`` may be the built-in assistant's (shared read-only, no second model in memory). The index
    is built for this FAQ alone (``progress(fraction, message)`` while embedding) and, when ``cache_dir`` is
    given, persisted under the FAQ's content fingerprint, so re-uploading the same file is instant.
    """
    if not isinstance(faq, KnowledgeBase):
        if max_mb is None or max_entries is None:
            raise ValueError("max_mb and max_entries are required when a path is given")
        faq = load_faq(faq, max_mb=max_mb, max_entries=max_entries)
    return Assistant.load(faq, embedder, cache_dir=cache_dir, config=config or AssistantConfig(), progress=progress)


def load_test_questions(source: str | Path | list[dict], kb: KnowledgeBase) -> list[dict]:
    """The user's test questions -> query records for :mod:`qa.evaluate`.

    Each record has ``question`` (or ``query``) and ``expected``: the entry id or the FAQ question text it
    should get, or empty / null when the FAQ does not answer it. JSONL, JSON list or CSV (same column names).
    """
    if isinstance(source, list):
        where_recs = [(f"record {i}", r) for i, r in enumerate(source, start=1)]
        name = "test questions"
    else:
        p = Path(source)
        name = p.name
        if not p.is_file():
            raise UserFacingError("Test questions: the file was not received; please upload it again.")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise UserFacingError(f"Test questions {name}: not UTF-8 text; save it as UTF-8.") from err
        if p.suffix.lower() == ".csv":
            where_recs = [(f"line {i + 2}", r) for i, r in enumerate(csv.DictReader(io.StringIO(text, newline="")))]
        elif p.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise UserFacingError(f"Test questions {name}: not valid JSON (line {err.lineno}: {err.msg}).") from err
            if not isinstance(data, list):
                raise UserFacingError(f"Test questions {name}: expected a JSON list of objects.")
            where_recs = [(f"record {i}", r) for i, r in enumerate(data, start=1)]
        else:
            where_recs = []
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        where_recs.append((f"line {n}", json.loads(line)))
                    except json.JSONDecodeError as err:
                        raise UserFacingError(f"Test questions {name}, line {n}: not valid JSON ({err.msg}).") from err
    by_id = {e.id: e.id for e in kb.entries}
    by_question = {}
    for e in kb.entries:
        for q in (e.question, e.question_en):
            if q:
                by_question.setdefault(" ".join(q.split()).lower(), e.id)
    out, errors = [], []
    for where, rec in where_recs:
        if not isinstance(rec, dict):
            errors.append(f"{where}: expected an object with 'question' and 'expected'")
            continue
        q = rec.get("question", rec.get("query"))
        if not isinstance(q, str) or not q.strip():
            errors.append(f"{where}: field 'question' is missing or empty")
            continue
        exp = rec.get("expected", rec.get("expected_id"))
        if exp in (None, ""):
            expected = None
        elif not isinstance(exp, (str, int)):
            errors.append(f"{where}: field 'expected' must be an entry id or question text")
            continue
        else:
            exp = str(exp).strip()
            expected = by_id.get(exp) or by_question.get(" ".join(exp.split()).lower())
            if expected is None:
                errors.append(f"{where}: field 'expected' ({exp[:40]!r}) is neither an id nor a question of the FAQ")
                continue
        from qa.assistant import detect_language

        out.append({"query": q.strip(), "lang": detect_language(q), "expected_id": expected, "line": where})
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise UserFacingError(f"Test questions {name}: {len(errors)} problem(s): {'; '.join(errors[:10])}{more}.")
    if sum(q["expected_id"] is not None for q in out) < MIN_TEST_QUESTIONS:
        raise UserFacingError(f"Test questions {name}: at least {MIN_TEST_QUESTIONS} questions with an expected "
                              "answer are needed to calibrate (add questions the FAQ should answer).")
    return out


def calibrate_with_questions(assistant: Assistant, questions: str | Path | list[dict],
                             target_false_reject: float = 0.05) -> tuple[Assistant, dict]:
    """"Calibrate with my test questions": choose the answer / clarify / reject numbers on the user's questions.

    Returns a *new* Assistant with them (``assistant`` is unchanged) and a report: the chosen numbers, the
    metrics before and after on these questions (in-sample: with a handful of questions this is what they
    say, not an estimate for unseen ones), and how many questions were used.
    """
    from qa import evaluate as ev

    queries = load_test_questions(questions, assistant.kb)
    results = ev.run_queries(assistant, queries)
    rule = ev.calibrate_rule(results, target_false_reject)
    n_ans = sum(q["expected_id"] is not None for q in queries)
    cal = Calibration(rule.threshold, rule.answer_threshold, rule.margin, calibrated=True,
                      source=f"calibrated on {n_ans} answerable + {len(queries) - n_ans} unanswerable test "
                             "questions of the user (in-sample)")
    report = {"threshold": round(rule.threshold, 4), "answer_threshold": round(rule.answer_threshold, 4),
              "margin": round(rule.margin, 4), "n_questions": len(queries), "n_answerable": n_ans,
              "before": ev.metrics(results, ev.Rule.of(assistant)), "after": ev.metrics(results, rule)}
    return assistant.with_calibration(cal), report


class _MemoEmbedder:
    """Wraps an embedder and remembers each text's vector: the sub-sampled KBs re-use the same texts."""

    def __init__(self, inner: Embedder):
        self.inner, self.backend, self.model, self.dim = inner, inner.backend, inner.model, inner.dim
        self._memo: dict[tuple[bool, str], object] = {}

    def describe(self) -> str:
        return self.inner.describe()

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def _encode(self, texts, is_query: bool):
        import numpy as np

        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if (is_query, t) not in self._memo))
        if missing:
            vecs = self.inner.encode_queries(missing) if is_query else self.inner.encode_passages(missing)
            self._memo.update({(is_query, t): v for t, v in zip(missing, vecs, strict=True)})
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._memo[(is_query, t)] for t in texts])  # (n, d)

    def encode_queries(self, texts):
        return self._encode(texts, True)

    def encode_passages(self, texts):
        return self._encode(texts, False)


def measure_upload_default(embedder: Embedder, query_files: list[str | Path],
                           sizes: tuple[tuple[int, int], ...] = ((50, 3), (150, 2), (400, 1)), seed: int = 0,
                           clarify_budget: float = 0.12) -> dict:
    """How the uncalibrated default for uploaded FAQs was measured (``python -m qa upload-default --json``).

    Sub-samples of the built-in KB reduced to an upload's usual shape (question + answer only: no category, no
    English fields, no phrasings); ``sizes`` = (entries, how many random draws). The Chinese questions of
    ``query_files`` are answerable when their entry was drawn, unanswerable otherwise. Returns the pooled rule
    and a leave-one-sub-KB-out estimate (calibrated on the other sub-KBs, measured on the left-out one).
    """
    import numpy as np

    from qa import evaluate as ev
    from qa.index import IndexConfig
    from qa.kb import Entry

    full = load_kb(None)
    queries = [q for f in query_files for q in ev.load_queries(f) if q["lang"] == "zh"]
    emb = _MemoEmbedder(embedder)
    rng = np.random.default_rng(seed)
    runs: dict[str, list] = {}
    for size, draws in sizes:
        for d in range(draws):
            rows = sorted(rng.choice(len(full), size, replace=False)) if size < len(full) else range(len(full))
            kb = KnowledgeBase(tuple(Entry(id=full.entries[i].id, question=full.entries[i].question,
                                           answer=full.entries[i].answer) for i in rows), "upload-shaped sample")
            ids = {e.id for e in kb.entries}
            qs = [{**q, "expected_id": q["expected_id"] if q["expected_id"] in ids else None,
                   "also_ok": tuple(i for i in q.get("also_ok", ()) if i in ids)} for q in queries]
            a = Assistant.load(kb, emb, config=AssistantConfig(index=IndexConfig(phrasings=False)))
            runs[f"{size}-{d}"] = ev.run_queries(a, qs)
    # an upload without phrasings tells siblings apart less well: it may ask back more than the built-in KB (0.08)
    pooled = ev.calibrate_rule([r for rs in runs.values() for r in rs], clarify_budget=clarify_budget)
    keys = ("accepted_correct", "accepted_wrong", "clarify_rate", "clarify_contains_correct", "false_reject_rate",
            "unanswerable_reject_rate")
    held = {}
    for name, rs in runs.items():
        rule = ev.calibrate_rule([r for other, o in runs.items() if other != name for r in o],
                                 clarify_budget=clarify_budget)
        held[name] = {**{k: ev.metrics(rs, rule)[k] for k in keys}, "rule": ev.asdict_rule(rule)}
    mean = {k: round(float(np.mean([m[k] for m in held.values() if m[k] is not None])), 4) for k in keys}
    return {"rule": ev.asdict_rule(pooled), "leave_one_out_mean": mean, "leave_one_out": held,
            "sizes": [list(s) for s in sizes], "n_questions": len(queries)}


__all__ = ["build_faq_assistant", "calibrate_with_questions", "load_faq", "load_test_questions",
           "measure_upload_default"]
