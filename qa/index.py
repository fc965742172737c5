"""FAISS inner-product index over the KB, persisted under a fingerprint of KB + model + recipe.

What is indexed (decided by measurement on the dev set, see qa/README.md):

* every entry is embedded in several *views* — its question (query prefix), question + answer (passage
  prefix) and, when the KB has them, the same two in English. Each view vector is unit-normalised;
* vectors are *centred* by subtracting the KB's mean vector before re-normalising. E5 embeddings of one
  domain all point roughly the same way (cosines 0.85-0.95 for unrelated questions); removing the
  common direction spreads the scores, which helps both ranking and the "I don't know" threshold;
* an entry's stored vector is the mean of its centred unit view vectors, so one inner product with a
  (centred, unit) query equals the mean cosine over the entry's views: multi-view fusion costs a single
  FAISS lookup. These entry vectors have norm <= 1 by construction;
* an entry's other phrasings (``alt_questions``/``alt_questions_en``: how users ask for it) are embedded one
  by one (query prefix) into a second index. An entry that has phrasings scores
  ``(1 - w) * mean-view score + w * best phrasing score`` (``w = phrasing_weight``, 0.5): the mean keeps what
  the entry says, the max rewards the one phrasing a user's wording is close to (averaging them in instead
  blurs distinct wordings together; measured in qa/README.md). Entries without phrasings score the mean.
  Candidates are the union of both indexes' top hits, re-scored exactly.

Above ``hnsw_threshold`` entries the flat (exact) index is replaced by HNSW (approximate).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.embed import Embedder
from qa.kb import KnowledgeBase

log = logging.getLogger(__name__)

# progress(fraction done in [0, 1], message) while the KB is embedded (e.g. a progress bar for an uploaded FAQ)
Progress = Callable[[float, str], None]
PROGRESS_BATCH = 64  # texts embedded between two progress reports
RECIPE_VERSION = 2  # bump when the way vectors are built changes: invalidates persisted indexes
VIEWS = ("question", "question_answer", "question_en", "question_answer_en")


@dataclass(frozen=True)
class IndexConfig:
    views: tuple[str, ...] = VIEWS
    center: bool = True
    hnsw_threshold: int = 20_000  # entries; exact search is < 1 ms below this on one core
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    phrasings: bool = True  # index the entries' other phrasings (alt_questions / alt_questions_en)
    phrasing_weight: float = 0.5  # w in (1 - w) * mean-view score + w * best phrasing score

    def __post_init__(self):
        unknown = set(self.views) - set(VIEWS)
        if unknown or not self.views:
            raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {self.views}")


class VectorIndex:
    """A thin wrapper of a FAISS inner-product index (flat or HNSW) with save/load."""

    def __init__(self, index, kind: str):
        self.index = index
        self.kind = kind  # "flat" | "hnsw"

    @classmethod
    def build(cls, vectors: np.ndarray, *, hnsw_threshold: int = 20_000, m: int = 32,
              ef_construction: int = 80, ef_search: int = 128, add_batch: int = 100_000) -> VectorIndex:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
        n, d = vectors.shape
        if n >= hnsw_threshold:
            index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
            kind = "hnsw"
        else:
            index = faiss.IndexFlatIP(d)
            kind = "flat"
        for i in range(0, n, add_batch):
            index.add(vectors[i:i + add_batch])
        return cls(index, kind)

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of rows ``ids`` (k,) -> (k, d) (flat and HNSW-flat indexes keep them)."""
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def describe(self) -> str:
        if self.kind == "hnsw":
            return f"faiss HNSW (M={self.index.hnsw.nb_neighbors(1)}, efSearch={self.index.hnsw.efSearch})"
        return "faiss flat inner product (exact)"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (m, d) -> scores (m, k) descending, ids (m, k) (-1 where fewer than k entries)."""
        k = max(1, min(k, len(self)))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        import faiss

        index = faiss.read_index(str(path))
        kind = "hnsw" if isinstance(index, faiss.IndexHNSW) or "HNSW" in type(index).__name__ else "flat"
        return cls(index, kind)


@dataclass
class KBIndex:
    """The searchable KB: FAISS index over entry vectors (+ phrasings) plus the query-side centring vector."""

    index: VectorIndex  # one vector per entry (n, d)
    query_mean: np.ndarray  # (d,) subtracted from query embeddings before normalising (zeros: no centring)
    fingerprint: str
    from_cache: bool
    build_seconds: float
    phrasings: VectorIndex | None = None  # one vector per extra phrasing (m, d), grouped by entry
    phrasing_vectors: np.ndarray | None = None  # (m, d) the same vectors, for exact re-scoring
    phrasing_start: np.ndarray | None = None  # (n + 1,) entry i's phrasings are rows start[i]:start[i + 1]
    phrasing_weight: float = 0.5
    phrasing_owner: np.ndarray = field(init=False)  # (m,) entry row of each phrasing, derived from the offsets

    def __post_init__(self):
        m = 0 if self.phrasing_vectors is None else len(self.phrasing_vectors)
        self.phrasing_owner = (np.searchsorted(self.phrasing_start, np.arange(m), side="right") - 1
                               if m else np.zeros(0, np.int64))

    def prepare_queries(self, q: np.ndarray) -> np.ndarray:
        """Raw unit query embeddings (m, d) -> centred unit vectors (m, d) matching the index."""
        q = np.atleast_2d(q).astype(np.float32) - self.query_mean[None, :]
        return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Prepared queries (m, d) -> entry scores (m, k) descending and entry rows (m, k) (-1: fewer entries)."""
        if self.phrasings is None or len(self.phrasings) == 0:
            return self.index.search(queries, k)
        k = max(1, min(k, len(self.index)))
        _, entry_ids = self.index.search(queries, k)  # (m, k)
        _, phrase_ids = self.phrasings.search(queries, k)  # (m, k) phrasing rows
        owner = self.phrasing_owner
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        w, start = self.phrasing_weight, self.phrasing_start
        for r, q in enumerate(np.atleast_2d(queries)):
            cand = np.unique(np.concatenate([entry_ids[r][entry_ids[r] >= 0],
                                             owner[phrase_ids[r][phrase_ids[r] >= 0]]]))  # (c,)
            s = self.index.reconstruct(cand) @ q  # (c,) mean-view scores
            for j, e in enumerate(cand):
                if start[e + 1] > start[e]:
                    best = float((self.phrasing_vectors[start[e]:start[e + 1]] @ q).max())
                    s[j] = (1 - w) * s[j] + w * best
            top = np.argsort(-s, kind="stable")[:k]
            scores[r, :len(top)], ids[r, :len(top)] = s[top], cand[top]
        return scores, ids


@dataclass(frozen=True)
class EntryVectors:
    entries: np.ndarray  # (n, d) mean of each entry's centred unit view vectors
    query_mean: np.ndarray  # (d,)
    phrasings: np.ndarray  # (m, d) centred unit vectors of the extra phrasings, grouped by entry
    phrasing_start: np.ndarray  # (n + 1,) offsets into ``phrasings``


def _view_texts(kb: KnowledgeBase, view: str) -> list[tuple[int, str]]:
    out = []
    for i, e in enumerate(kb.entries):
        if view == "question":
            text = e.question
        elif view == "question_answer":
            text = f"{e.question} {e.answer}"
        elif view == "question_en":
            text = e.question_en
        else:
            text = f"{e.question_en} {e.answer_en}" if e.question_en and e.answer_en else ""
        if text:
            out.append((i, text))
    return out


def _phrasing_texts(kb: KnowledgeBase) -> tuple[list[str], np.ndarray]:
    """All extra phrasings in entry order and the (n + 1,) offsets of each entry's block."""
    texts, start = [], [0]
    for e in kb.entries:
        texts += list(e.alt_questions) + list(e.alt_questions_en)
        start.append(len(texts))
    return texts, np.array(start, np.int64)


def index_fingerprint(kb: KnowledgeBase, embedder: Embedder, config: IndexConfig) -> str:
    recipe = json.dumps({"v": RECIPE_VERSION, "views": list(config.views), "center": config.center,
                         "hnsw": config.hnsw_threshold, "m": config.hnsw_m, "phrasings": config.phrasings},
                        sort_keys=True)
    h = hashlib.sha256(f"{kb.fingerprint()}|{embedder.fingerprint()}|{recipe}".encode())
    return h.hexdigest()[:24]


def build_entry_vectors(kb: KnowledgeBase, embedder: Embedder, config: IndexConfig,
                        progress: Progress | None = None) -> EntryVectors:
    """Embed every view and phrasing of every entry (centred and normalised, see the module docstring)."""
    n, d = len(kb), embedder.dim
    view_items = [(view, _view_texts(kb, view)) for view in config.views]
    texts, start = _phrasing_texts(kb) if config.phrasings else ([], np.zeros(n + 1, np.int64))
    total = sum(len(items) for _, items in view_items) + len(texts)
    done = 0

    def encode(batch_texts: list[str], is_query: bool) -> np.ndarray:
        nonlocal done
        if progress is None:
            out = embedder.encode_queries(batch_texts) if is_query else embedder.encode_passages(batch_texts)
            done += len(batch_texts)
            return out
        parts = []
        for i in range(0, len(batch_texts), PROGRESS_BATCH):
            chunk = batch_texts[i:i + PROGRESS_BATCH]
            parts.append(embedder.encode_queries(chunk) if is_query else embedder.encode_passages(chunk))
            done += len(chunk)
            progress(done / max(total, 1), f"embedded {done}/{total} texts")
        return np.concatenate(parts) if parts else np.zeros((0, d), np.float32)

    views: list[tuple[np.ndarray, np.ndarray]] = []  # (entry indices (k,), unit vectors (k, d))
    query_side: list[np.ndarray] = []
    for view, items in view_items:
        if not items:
            continue
        idx = np.array([i for i, _ in items])
        # questions are short, query-like texts: E5's "query: " prefix; question+answer is a passage
        is_question = view in ("question", "question_en")
        vecs = encode([t for _, t in items], is_question)  # (k, d)
        views.append((idx, vecs))
        if is_question:
            query_side.append(vecs)
    phr = encode(texts, True) if texts else np.zeros((0, d), np.float32)  # (m, d) user-like wordings
    query_side.append(phr)
    all_vecs = np.concatenate([v for _, v in views] + [phr])  # (total views + m, d)
    doc_mean = all_vecs.mean(0) if config.center else np.zeros(d, np.float32)
    q_all = np.concatenate(query_side)
    query_mean = q_all.mean(0) if (config.center and len(q_all)) else np.zeros(d, np.float32)

    def centred(v: np.ndarray) -> np.ndarray:
        c = v - doc_mean[None, :]
        return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)

    acc = np.zeros((n, d), np.float64)
    count = np.zeros(n)
    for idx, vecs in views:
        np.add.at(acc, idx, centred(vecs))
        np.add.at(count, idx, 1)
    entries = (acc / np.maximum(count, 1)[:, None]).astype(np.float32)
    return EntryVectors(entries, query_mean.astype(np.float32), centred(phr).astype(np.float32), start)


def build_or_load(kb: KnowledgeBase, embedder: Embedder, config: IndexConfig,
                  cache_dir: Path | None, progress: Progress | None = None) -> KBIndex:
    """Load the persisted index for this KB + model + recipe, or build (and persist) it."""
    fp = index_fingerprint(kb, embedder, config)
    folder = Path(cache_dir) / "qa-index" if cache_dir is not None else None
    n_phr = kb.n_phrasings if config.phrasings else 0
    if folder is not None:
        faiss_path, npz_path = folder / f"{fp}.faiss", folder / f"{fp}.npz"
        if faiss_path.is_file() and npz_path.is_file():
            try:
                t0 = time.perf_counter()
                index = VectorIndex.load(faiss_path)
                with np.load(npz_path) as z:
                    query_mean, phr, start = z["query_mean"], z["phrasing_vectors"], z["phrasing_start"]
                if len(index) == len(kb) and len(phr) == n_phr and len(start) == len(kb) + 1:
                    return _kb_index(index, query_mean, phr, start, fp, True, time.perf_counter() - t0, config)
            except Exception as err:  # a truncated/corrupt cache is rebuilt, not fatal
                log.warning("ignoring unreadable QA index cache %s: %s", faiss_path, err)
    t0 = time.perf_counter()
    vec = build_entry_vectors(kb, embedder, config, progress)
    index = _vector_index(vec.entries, config)
    seconds = time.perf_counter() - t0
    if folder is not None:
        _persist(folder, fp, index, vec)
    return _kb_index(index, vec.query_mean, vec.phrasings, vec.phrasing_start, fp, False, seconds, config)


def _vector_index(vectors: np.ndarray, config: IndexConfig) -> VectorIndex:
    return VectorIndex.build(vectors, hnsw_threshold=config.hnsw_threshold, m=config.hnsw_m,
                             ef_construction=config.hnsw_ef_construction, ef_search=config.hnsw_ef_search)


def _kb_index(index: VectorIndex, query_mean: np.ndarray, phr: np.ndarray, start: np.ndarray, fp: str,
              from_cache: bool, seconds: float, config: IndexConfig) -> KBIndex:
    # the phrasing index is rebuilt from the stored vectors (an exact flat index of a few thousand rows
    # takes milliseconds; HNSW above the threshold, as for entries)
    phr_index = _vector_index(phr, config) if len(phr) else None
    return KBIndex(index, query_mean, fp, from_cache, seconds, phrasings=phr_index,
                   phrasing_vectors=phr if len(phr) else None, phrasing_start=start,
                   phrasing_weight=config.phrasing_weight)


def _persist(folder: Path, fp: str, index: VectorIndex, vec: EntryVectors) -> None:
    """Write atomically (temp file + rename) so concurrent starts never read a half-written index."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
        try:
            index.save(tmp / "index.faiss")
            np.savez(tmp / "meta.npz", query_mean=vec.query_mean, phrasing_vectors=vec.phrasings,
                     phrasing_start=vec.phrasing_start)
            os.replace(tmp / "meta.npz", folder / f"{fp}.npz")
            os.replace(tmp / "index.faiss", folder / f"{fp}.faiss")
        finally:
            for f in tmp.glob("*"):
                f.unlink()
            tmp.rmdir()
    except OSError as err:  # read-only cache: still usable, just re-embeds next start
        log.warning("could not persist the QA index under %s: %s", folder, err)
