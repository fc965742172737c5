"""Query normalisation and the lexical (BM25) side of retrieval.

* :func:`normalize` — what every question goes through before it is embedded or tokenised: Unicode NFKC
  (full-width letters, digits and punctuation -> ASCII), traditional -> simplified Chinese (OpenCC ``t2s``),
  collapsed whitespace, and a short list of colloquial words of the service domain replaced by the words the
  KB uses (驾照 -> 驾驶证, 咋 -> 怎么, "hukou" -> "household registration", "license" -> "licence" ...).
* :class:`LexicalIndex` — BM25 (``bm25s``) over every text of an entry (its question, its other phrasings, the
  English question and phrasings, and the answers), Chinese tokenised by ``jieba``, English by words. An
  entry's lexical score is the best score over its question/phrasing documents plus a smaller share of its
  answer documents' score (entry-level aggregation over views), divided by the query's own "self score" (the
  BM25 score the query would get against a document made of itself), so it lies in about [0, 1] whatever the
  query length and can be fused with the dense score linearly.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import unicodedata

import numpy as np

from qa.kb import KnowledgeBase

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+|[\u3400-\u9fff\uf900-\ufaff]+")

# colloquial / regional words of the service domain -> the words the KB is written in (applied after t2s, longest
# first). Only unambiguous substitutions: each left side means the right side in every public-service question.
ZH_SYNONYMS: dict[str, str] = {
    "驾照": "驾驶证", "驾驶执照": "驾驶证", "行车证": "行驶证", "咋整": "怎么办", "咋办": "怎么办", "咋弄": "怎么办",
    "咋": "怎么", "啥": "什么", "娃": "孩子", "小孩": "孩子", "宝宝": "孩子", "老外": "外国人", "黑户": "没有户口",
    "退休金": "养老金", "失业金": "失业保险金", "法人代表": "法定代表人", "法人": "法定代表人",
    "教资": "教师资格", "法考": "法律职业资格考试", "个体户": "个体工商户", "户口簿": "户口本",
    "港澳通行证": "往来港澳通行证", "台胞证": "台湾居民来往大陆通行证",
    "医保卡": "社保卡", "社会保障卡": "社保卡", "公积金贷": "公积金贷款", "年审": "年检",
}
EN_SYNONYMS: dict[str, str] = {
    "hukou": "household registration", "license": "licence", "licenses": "licences", "drivers licence": "driving licence",
    "driver's licence": "driving licence", "driver licence": "driving licence",
    "driver's license": "driving licence", "drivers license": "driving licence", "driver license": "driving licence", "green card": "permanent residence",
    "housing fund": "housing provident fund", "id": "id card", "sole trader": "individual business", "self employed": "flexible worker",
    "self-employed": "flexible worker", "freelancer": "flexible worker", "unemployment benefit": "unemployment insurance",
    "pension fund": "pension",
}
_ZH_KEYS = sorted(ZH_SYNONYMS, key=len, reverse=True)
_EN_PATTERN = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(EN_SYNONYMS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
# tokens carrying no topic (both languages); BM25's IDF down-weights common words anyway, these are the question
# scaffolding every entry shares
STOPWORDS = frozenset(
    "的 了 吗 呢 吧 啊 呀 么 我 你 他 她 我们 是 有 在 和 与 或 还 也 就 都 要 能 可以 会 怎么 怎么办 怎样 如何 什么 哪些 "
    "哪里 哪个 多少 一下 请问 一个 需要 这个 那个 现在 想 问 问问 "
    "a an the and or of to in on for at by is are be do does did i my me we our you your it its can could how "
    "what which where when who why should would will if with from as am was were have has had get got there this "
    "that any some need want please".split())


@functools.lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _en_sub(m: re.Match) -> str:
    return EN_SYNONYMS[m.group(1).lower().replace("’", "'")]


def normalize(text: str, synonyms: bool = True) -> str:
    """Full-width -> ASCII, traditional -> simplified, one space between words, colloquial words -> the KB's."""
    t = unicodedata.normalize("NFKC", text)
    t = _SPACE.sub(" ", t).strip()
    if _HAN.search(t):
        t = _t2s().convert(t)
        if synonyms:
            for k in _ZH_KEYS:
                if k in t:
                    t = t.replace(k, ZH_SYNONYMS[k])
            t = t.replace("往来往来", "往来")
    elif synonyms:
        t = _EN_PATTERN.sub(_en_sub, t.replace("’", "'"))
        # one pass; collapse what a rule may stack onto words already there ("ID card card")
        t = re.sub(r"\b(id card) card\b", r"\1", t, flags=re.IGNORECASE).replace("provident provident", "provident")
    return t


_JIEBA_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


# words of one meaning after jieba has cut them (lexical side only): "how do I get/apply for/handle X"
TOKEN_SYNONYMS: dict[str, str] = {"申领": "办理", "申请": "办理", "办": "办理", "领取": "办理", "申办": "办理"}


def tokenize(text: str) -> list[str]:
    """Lower-case words: jieba for Chinese runs, letters/digits for the rest; stopwords and 1-letter English
    words dropped; English plurals folded (licences -> licence)."""
    out = []
    for run in _WORD.findall(text.lower()):
        if _HAN.match(run):
            with _JIEBA_LOCK:  # jieba's lazy structures are not thread-safe
                words = _jieba().lcut(run)
            out += [TOKEN_SYNONYMS.get(w, w) for w in words if w not in STOPWORDS]
        elif run not in STOPWORDS and len(run) > 1:
            if len(run) > 3 and run.endswith("s") and not run.endswith("ss"):
                run = run[:-1]
            out.append(run)
    return out


class LexicalIndex:
    """BM25 over an entry's texts, aggregated per entry (see the module docstring)."""

    def __init__(self, kb: KnowledgeBase, answer_weight: float = 0.0, k1: float = 1.2, b: float = 0.75,
                 coverage_weight: float = 0.0):
        import bm25s

        docs: list[list[str]] = []
        owner: list[int] = []
        is_answer: list[bool] = []
        for i, e in enumerate(kb.entries):
            for text, ans in ([(e.question, False), (e.question_en, False)]
                              + [(t, False) for t in (*e.alt_questions, *e.alt_questions_en)]
                              + [(e.answer, True), (e.answer_en, True)]):
                toks = tokenize(normalize(text)) if text else []
                if toks:
                    docs.append(toks)
                    owner.append(i)
                    is_answer.append(ans)
        self.n_entries = len(kb)
        self.owner = np.array(owner, np.int64)
        self.is_answer = np.array(is_answer, bool)
        self.answer_weight = answer_weight
        self.k1, self.b = k1, b
        vocab = sorted({t for d in docs for t in d})
        self.vocab = {t: j for j, t in enumerate(vocab)}
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(bm25s.tokenization.Tokenized(
            ids=[[self.vocab[t] for t in d] for d in docs], vocab=dict(self.vocab)), show_progress=False)
        n_docs = len(docs)
        df = np.zeros(len(vocab))
        for d in docs:
            for t in set(d):
                df[self.vocab[t]] += 1
        self._idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))  # bm25s' default (Lucene) IDF
        self._idf_unknown = math.log(1 + (n_docs + 0.5) / 0.5)
        self.n_docs = n_docs
        # which question-side documents hold which terms (binary), for the coverage of a document by the query
        from scipy import sparse

        q_docs = np.flatnonzero(~self.is_answer)
        rows = [r for r, d in enumerate(q_docs) for _ in set(docs[d])]
        cols = [self.vocab[t] for d in q_docs for t in set(docs[d])]
        self._terms = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                        shape=(len(q_docs), len(vocab)))  # (question docs, vocab)
        self._q_owner = self.owner[q_docs]
        self._doc_mass = np.asarray(self._terms @ self._idf.astype(np.float32)).ravel()  # (question docs,)
        self.coverage_weight = coverage_weight
        # the topics (categories) whose question-side texts use each term: a term used by one topic only names it
        cats: dict[str, set[str]] = {}
        for d in q_docs:
            for t in docs[d]:
                cats.setdefault(t, set()).add(kb.entries[self.owner[d]].category)
        self._term_topics = {t: frozenset(c) for t, c in cats.items()}

    def names_topic(self, query: str, category: str) -> bool:
        """True when a term of the (normalised) query is used by the questions of ``category`` and no other topic
        (e.g. 行驶证 -> vehicles; "card" or 丢 are not: they occur under several topics)."""
        return any(self._term_topics.get(t) == frozenset((category,)) for t in tokenize(query))

    def _self_score(self, toks: list[str]) -> float:
        """The BM25 score of the query against a document equal to itself at average length (tf = its count)."""
        s = 0.0
        for t in set(toks):
            tf = toks.count(t)
            idf = self._idf[self.vocab[t]] if t in self.vocab else self._idf_unknown
            s += idf * tf * (self.k1 + 1) / (tf + self.k1)
        return s

    def scores(self, query: str) -> np.ndarray:
        """Normalised query text -> (n_entries,) lexical scores in about [0, 1]."""
        toks = tokenize(query)
        out = np.zeros(self.n_entries, np.float32)
        known = [self.vocab[t] for t in toks if t in self.vocab]
        if not known:
            return out
        doc = np.asarray(self.retriever.get_scores(known), np.float32)  # (n_docs,)
        q_side = np.full(self.n_entries, 0.0, np.float32)
        np.maximum.at(q_side, self.owner[~self.is_answer], doc[~self.is_answer])
        a_side = np.zeros(self.n_entries, np.float32)
        np.maximum.at(a_side, self.owner[self.is_answer], doc[self.is_answer])
        agg = (1 - self.answer_weight) * q_side + self.answer_weight * a_side
        agg = agg / max(self._self_score(toks), 1e-6)
        if self.coverage_weight > 0:
            # how much of an entry's own question (its best question/phrasing) the query covers, IDF-weighted: a
            # general question ("怎么办理社保卡") covers the general entry ("社保卡怎么申领") better than a narrow
            # sibling that adds specifics it never mentioned ("社保卡丢了怎么挂失补办")
            w = np.zeros(len(self.vocab), np.float32)
            w[known] = self._idf[known]
            cov = np.asarray(self._terms @ w).ravel() / np.maximum(self._doc_mass, 1e-6)  # (question docs,)
            best = np.zeros(self.n_entries, np.float32)
            np.maximum.at(best, self._q_owner, cov.astype(np.float32))
            agg = (1 - self.coverage_weight) * agg + self.coverage_weight * best
        return agg
