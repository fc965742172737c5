"""Benchmarks (figures, not tests): built-in KB build/load/query latency, and a synthetic large index.

``python -m qa bench --json`` prints one JSON object. The synthetic part indexes N random unit vectors
(384-d like E5) in FAISS HNSW, then searches with noisy copies of known entries, reporting build time,
query latency (search only, one query at a time) and recall@1 (the copied entry found first).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from qa.assistant import DEFAULT_THRESHOLD, Assistant, timed_ask
from qa.index import IndexConfig, VectorIndex


def _pct(xs: list[float]) -> dict:
    a = np.asarray(xs)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "max": round(float(a.max()), 3), "n": int(a.size)}


def bench_builtin(embedder: str, backend: str, n_queries: int = 200, cache_dir: Path | None = None,
                  seed: int = 0, cold: bool = True) -> dict:
    """Cold start from the shipped vectors, a cold build that embeds the KB into a fresh cache, a warm load from
    that cache, then ``ask`` latency over KB questions (zh + en). ``cold=False`` skips the cold build and the
    warm load (minutes of embedding) and measures ``ask`` on the index built from the shipped vectors."""
    with tempfile.TemporaryDirectory(prefix="qa-bench-", dir=cache_dir) as tmp:
        t0 = time.perf_counter()
        a = Assistant.load(None, embedder, backend, cache_dir=Path(tmp))  # what a fresh start does
        shipped = time.perf_counter() - t0
        origin_shipped = a.index.origin
        cold_s = build = warm = None
        if cold:
            cold_s, build, warm, a = _cold_and_warm(a, backend, Path(tmp))
        rng = np.random.default_rng(seed)
        pool = [e.question for e in a.kb.entries] + [e.question_en for e in a.kb.entries if e.question_en]
        queries = [pool[i] for i in rng.choice(len(pool), size=min(n_queries, len(pool)), replace=False)]
        for q in queries[:5]:  # warm-up: first calls page in weights
            a.ask(q)
        cpu0 = time.process_time()
        lat = [timed_ask(a, q)[1] for q in queries]
        cpu_ms = (time.process_time() - cpu0) * 1000.0 / max(len(queries), 1)
        return {"embedder": a.embedder.describe(), "kb_size": len(a.kb), "index": a.index.index.describe(),
                "load_fresh_start_s": round(shipped, 2), "fresh_start_index_from": origin_shipped,
                "build_s": None if build is None else round(build, 2),
                "load_cold_s": None if cold_s is None else round(cold_s, 2),
                "load_warm_s": None if warm is None else round(warm, 3), "ask_latency_ms": _pct(lat),
                "ask_cpu_ms_mean": round(cpu_ms, 2), "threshold": a.config.threshold,
                "phrasings": a.kb.n_phrasings}


def _cold_and_warm(a: Assistant, backend: str, tmp: Path) -> tuple[float, float, float, Assistant]:
    """A cold build that embeds every text into ``tmp`` (seconds, embedding seconds), then a warm load from it."""
    from qa.assistant import AssistantConfig

    t0 = time.perf_counter()
    a = Assistant.load(None, a.embedder, backend, cache_dir=tmp,
                       config=AssistantConfig(index=IndexConfig(use_shipped=False)))  # embeds every text
    cold = time.perf_counter() - t0
    build = a.index.build_seconds
    t0 = time.perf_counter()
    a = Assistant.load(None, a.embedder, backend, cache_dir=tmp)  # same embedder object: index only
    warm = time.perf_counter() - t0
    assert a.index.from_cache
    return cold, build, warm, a


def bench_synthetic(n: int = 1_000_000, dim: int = 384, n_queries: int = 200, m: int = IndexConfig.hnsw_m,
                    ef_construction: int = IndexConfig.hnsw_ef_construction,
                    ef_searches: tuple[int, ...] = (64, 128, 256, 512, 1024),
                    clustered: bool = True, seed: int = 0, chunk: int = 100_000) -> dict:
    """HNSW over ``n`` random unit vectors; queries are noisy copies of random entries (cosine ~0.89).

    ``clustered`` (default): entries scatter around n/100 random topic centres (cosine ~0.8 to their
    centre, ~0.65 between siblings), the way sentence embeddings of a KB group by topic. With
    ``clustered=False`` the vectors are uniform on the sphere: every pair is nearly orthogonal, a worst
    case for graph search (measured recall@1 0.135 at efSearch 64 for 1M). Reports build time, and for
    each efSearch the one-query-at-a-time search latency and recall@1 (the copied entry found first).
    """
    import faiss

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32)  # (c, d)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    targets = np.sort(rng.choice(n, size=n_queries, replace=False))
    queries = np.empty((n_queries, dim), np.float32)
    t0 = time.perf_counter()
    index = VectorIndex.build(np.zeros((0, dim), np.float32), hnsw_threshold=0, m=m,
                              ef_construction=ef_construction, ef_search=max(ef_searches))
    for start in range(0, n, chunk):  # generate chunk-wise: never hold a second copy of the data
        x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)  # (c, d)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        if clustered:
            x = centres[rng.integers(0, len(centres), len(x))] + 0.75 * x
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        for t in targets[(targets >= start) & (targets < start + len(x))]:
            noise = rng.standard_normal(dim, dtype=np.float32)
            q = x[t - start] + 0.5 * noise / np.linalg.norm(noise)
            queries[np.searchsorted(targets, t)] = q / np.linalg.norm(q)
        index.add(x)
    build = time.perf_counter() - t0
    sweeps = []
    for ef in ef_searches:
        index.index.hnsw.efSearch = ef
        lat, hits = [], 0
        for i in range(n_queries):
            t1 = time.perf_counter()
            _, ids = index.search(queries[i:i + 1], 3)
            lat.append((time.perf_counter() - t1) * 1000)
            hits += int(ids[0, 0] == targets[i])
        sweeps.append({"ef_search": ef, "search_latency_ms": _pct(lat), "recall_at_1": round(hits / n_queries, 4)})
    return {"n": n, "dim": dim, "data": "clustered" if clustered else "uniform", "index": "faiss HNSW",
            "hnsw_M": m, "ef_construction": ef_construction, "faiss_threads": faiss.omp_get_max_threads(),
            "build_s": round(build, 1), "memory_mb_vectors": round(n * dim * 4 / 2**20), "by_ef_search": sweeps}


def run(embedder: str, backend: str, synthetic_n: int, n_queries: int = 200, cache_dir: Path | None = None,
        builtin: bool = True, cold: bool = True) -> dict:
    out = {"builtin": bench_builtin(embedder, backend, n_queries, cache_dir, cold=cold)} if builtin else {}
    if synthetic_n > 0:
        out["synthetic"] = bench_synthetic(synthetic_n)
    out["config"] = {"threshold": out["builtin"]["threshold"] if builtin else DEFAULT_THRESHOLD,
                     "index": asdict(IndexConfig())}
    return out
