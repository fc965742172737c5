"""Measure an :class:`~qa.Assistant` on a query file and calibrate its acceptance threshold.

Query files are JSONL lines ``{"query": str, "lang": "zh"|"en", "expected_id": str | null}``
(null = the KB does not answer it). Metrics (overall and per language under ``by_lang``):

* ``top1_accuracy`` — answerable queries whose best entry is the expected one, ignoring the threshold;
* ``accepted_correct`` — answerable queries answered (score >= threshold) with the expected entry;
* ``false_reject_rate`` — answerable queries below the threshold;
* ``unanswerable_reject_rate`` — unanswerable queries below the threshold;
* ``mrr`` — mean reciprocal rank of the expected entry in the top 10 (0 when absent), answerable only;
* ``latency_ms_p50`` / ``latency_ms_p95`` — wall time of ``Assistant.ask`` (embedding + search + answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from qa.assistant import Assistant, detect_language, timed_ask

MRR_DEPTH = 10


@dataclass(frozen=True)
class QueryResult:
    query: str
    lang: str
    expected_id: str | None
    ranked_ids: tuple[str, ...]  # top MRR_DEPTH entry ids, best first
    top1_score: float  # the confidence the threshold is compared with (Assistant.retrieve)
    answered: bool
    latency_ms: float

    @property
    def answerable(self) -> bool:
        return self.expected_id is not None


def load_queries(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UserFacingError(f"Query file: no file at {p}.")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserFacingError(f"Query file {p.name}, line {n}: not valid JSON ({err.msg}).") from err
        if not isinstance(rec, dict) or not isinstance(rec.get("query"), str) or not rec["query"].strip():
            raise UserFacingError(f"Query file {p.name}, line {n}: field 'query' is missing or empty.")
        expected = rec.get("expected_id")
        if expected is not None and not isinstance(expected, str):
            raise UserFacingError(f"Query file {p.name}, line {n}: field 'expected_id' must be text or null.")
        lang = rec.get("lang") or detect_language(rec["query"])
        if lang not in ("zh", "en"):
            raise UserFacingError(f"Query file {p.name}, line {n}: field 'lang' must be 'zh' or 'en'.")
        out.append({"query": rec["query"], "lang": lang, "expected_id": expected, "line": n})
    if not out:
        raise UserFacingError(f"Query file {p.name}: no queries.")
    return out


def run_queries(assistant: Assistant, queries: list[dict]) -> list[QueryResult]:
    known = {e.id for e in assistant.kb.entries}
    for q in queries:
        if q["expected_id"] is not None and q["expected_id"] not in known:
            raise UserFacingError(f"Query file line {q['line']}: field 'expected_id' names {q['expected_id']!r}, "
                                  "which is not in the knowledge base.")
    results = []
    for q in queries:
        ans, ms = timed_ask(assistant, q["query"])
        hits, confidence = assistant.retrieve(assistant.validate(q["query"]), k=MRR_DEPTH)
        results.append(QueryResult(q["query"], q["lang"], q["expected_id"], tuple(h.entry.id for h in hits),
                                   confidence, ans.source == "kb", ms))
    return results


def metrics(results: list[QueryResult], threshold: float) -> dict:
    """Metrics for ``results`` as if the acceptance threshold were ``threshold``."""
    ans = [r for r in results if r.answerable]
    una = [r for r in results if not r.answerable]
    accepted = [r.top1_score >= threshold for r in ans]
    correct = [r.ranked_ids[:1] == (r.expected_id,) for r in ans]
    rr = [1.0 / (r.ranked_ids.index(r.expected_id) + 1) if r.expected_id in r.ranked_ids else 0.0 for r in ans]
    lat = np.array([r.latency_ms for r in results])

    def mean(xs) -> float | None:
        return round(float(np.mean(xs)), 4) if len(xs) else None

    return {
        "n": len(results),
        "n_answerable": len(ans),
        "n_unanswerable": len(una),
        "top1_accuracy": mean(correct),
        "accepted_correct": mean([a and c for a, c in zip(accepted, correct)]),
        "accepted_wrong": mean([a and not c for a, c in zip(accepted, correct)]),
        "false_reject_rate": mean([not a for a in accepted]),
        "unanswerable_reject_rate": mean([r.top1_score < threshold for r in una]),
        "mrr": mean(rr),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
    }


def report(results: list[QueryResult], threshold: float) -> dict:
    out = metrics(results, threshold)
    out["threshold"] = threshold
    out["by_lang"] = {lang: metrics([r for r in results if r.lang == lang], threshold)
                      for lang in sorted({r.lang for r in results})}
    return out


def evaluate(assistant: Assistant, queries: list[dict]) -> dict:
    return report(run_queries(assistant, queries), assistant.config.threshold)


def calibrate_threshold(results: list[QueryResult], target_false_reject: float = 0.05) -> float:
    """Highest threshold that rejects at most ``target_false_reject`` of the answerable queries.

    That is the k-th smallest answerable top-1 score with k = floor(target * n): the false-reject budget
    is spent, and every unanswerable query scoring lower than it is rejected.
    """
    scores = np.sort([r.top1_score for r in results if r.answerable])
    if not len(scores):
        raise UserFacingError("Calibration needs answerable queries (non-null expected_id).")
    k = int(np.floor(target_false_reject * len(scores)))
    return float(scores[min(k, len(scores) - 1)])


def cross_validate(results: list[QueryResult], target_false_reject: float = 0.05, repeats: int = 200,
                   seed: int = 0) -> dict:
    """Honest threshold estimate: calibrate on a random half, measure on the other half (and swap).

    Halves are stratified by language x answerable. Returns mean and std of the held-out metrics.
    """
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, r in enumerate(results):
        groups.setdefault((r.lang, r.answerable), []).append(i)
    rows = []
    for _ in range(repeats):
        half_a, half_b = [], []
        for idx in groups.values():
            perm = rng.permutation(idx)
            half_a += list(perm[: len(perm) // 2])
            half_b += list(perm[len(perm) // 2:])
        for cal, test in ((half_a, half_b), (half_b, half_a)):
            t = calibrate_threshold([results[i] for i in cal], target_false_reject)
            m = metrics([results[i] for i in test], t)
            rows.append((t, m["accepted_correct"], m["false_reject_rate"], m["unanswerable_reject_rate"]))
    arr = np.array(rows, dtype=float)
    names = ("threshold", "accepted_correct", "false_reject_rate", "unanswerable_reject_rate")
    return {"protocol": f"{repeats} random stratified half splits, calibrate on one half, test on the other "
                        f"(both ways), false-reject target {target_false_reject}",
            **{name: {"mean": round(float(arr[:, j].mean()), 4), "std": round(float(arr[:, j].std()), 4)}
               for j, name in enumerate(names)}}
