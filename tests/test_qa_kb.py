"""Knowledge-base loading: built-in KB, user files (JSONL/CSV/JSON), clear errors, duplicates, Taipei FAQ."""

from __future__ import annotations

import json

import pytest

from common.errors import UserFacingError
from qa.kb import load_kb


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_builtin_kb_has_400_bilingual_entries_in_8_categories():
    kb = load_kb(None)
    assert len(kb) == 400 and kb.source == "built-in"
    assert len({e.category for e in kb.entries}) == 8
    assert len({e.id for e in kb.entries}) == 400
    assert all(e.question_en and e.answer_en for e in kb.entries)
    assert kb.duplicates == ()
    assert load_kb("").fingerprint() == kb.fingerprint()
    # every entry carries the project's user phrasings: 3 Chinese + 2 English (qa/README.md, "phrasings"); the
    # in-province migration entry has one more of each for the general "what do I need to move my hukou" (issue 23)
    extra = {"household-016": 1}
    assert all(len(e.alt_questions) == 3 + extra.get(e.id, 0) and len(e.alt_questions_en) == 2 + extra.get(e.id, 0)
               for e in kb.entries)
    assert kb.n_phrasings == 2002


def test_phrasings_load_from_lists_or_separated_text_and_bad_ones_are_named(tmp_path):
    rows = [{"question": "护照怎么办？", "answer": "到出入境窗口办理。", "alt_questions": ["办护照 流程", " 护照去哪办 ", "办护照 流程"],
             "alt_questions_en": "passport how | where to get a passport"},
            {"question": "社保卡丢了怎么办？", "answer": "先挂失再补办。"}]
    kb = load_kb(_write_jsonl(tmp_path / "kb.jsonl", rows))
    assert kb.entries[0].alt_questions == ("办护照 流程", "护照去哪办")  # trimmed, de-duplicated, order kept
    assert kb.entries[0].alt_questions_en == ("passport how", "where to get a passport")
    assert kb.entries[1].alt_questions == () and kb.n_phrasings == 4
    (tmp_path / "kb.csv").write_text('question,answer,alt_questions\n护照怎么办？,去窗口办理。,"办护照 流程\n护照去哪办"\n',
                                     encoding="utf-8")
    assert load_kb(tmp_path / "kb.csv").entries[0].alt_questions == ("办护照 流程", "护照去哪办")
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "a?", "answer": "b", "alt_questions": ["x", 3]},
                                                {"question": "c?", "answer": "d", "alt_questions_en": {"x": 1}}])
    with pytest.raises(UserFacingError) as err:
        load_kb(bad)
    msg = str(err.value)
    assert "line 1: field 'alt_questions' must be a list of texts" in msg and "line 2: field 'alt_questions_en'" in msg


def test_jsonl_csv_and_json_load_the_same_entries(tmp_path):
    rows = [{"id": "a1", "question": "护照怎么办？", "answer": "到出入境窗口办理。", "question_en": "How to get a passport?",
             "answer_en": "Apply at an exit-entry window."},
            {"question": "社保卡丢了怎么办？", "answer": "先挂失再补办。"}]
    j = load_kb(_write_jsonl(tmp_path / "kb.jsonl", rows))
    (tmp_path / "kb.json").write_text(json.dumps({"entries": rows}, ensure_ascii=False), encoding="utf-8")
    js = load_kb(tmp_path / "kb.json")
    (tmp_path / "kb.csv").write_text(
        "\ufeffid,question,answer,question_en,answer_en\n"
        "a1,护照怎么办？,到出入境窗口办理。,How to get a passport?,\"Apply at an exit-entry window.\"\n"
        ",社保卡丢了怎么办？,\"先挂失\n再补办。\",,\n", encoding="utf-8")
    c = load_kb(tmp_path / "kb.csv")
    for kb in (j, js, c):
        assert [e.id for e in kb.entries] == ["a1", "entry-2"]  # missing id -> generated
        assert kb.entries[0].answer_en == "Apply at an exit-entry window."
    assert c.entries[1].answer == "先挂失\n再补办。"
    assert j.fingerprint() == js.fingerprint()


@pytest.mark.parametrize("content, needle", [
    ('{"question": "a?", "answer": "b"}\n{"question": "c?"}\n', "line 2: field 'answer' is missing or empty"),
    ('{"question": "a?", "answer": "b"}\n\n{"question": "  ", "answer": "x"}\n', "line 3: field 'question'"),
    ('{"question": "a?", "answer": "b"}\n{oops\n', "line 2: not valid JSON"),
    ('{"question": "a?", "answer": ["b"]}\n', "line 1: field 'answer' must be text"),
    ('["question", "answer"]\n', "line 1: expected an object"),
    ('{"id": "x", "question": "a?", "answer": "b"}\n{"id": "x", "question": "c?", "answer": "d"}\n',
     "line 2: field 'id' repeats 'x' (first seen at line 1)"),
])
def test_jsonl_errors_name_line_and_field(tmp_path, content, needle):
    p = tmp_path / "bad.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(UserFacingError) as err:
        load_kb(p)
    assert needle in str(err.value) and "bad.jsonl" in str(err.value)


def test_csv_and_json_structure_errors(tmp_path):
    (tmp_path / "a.csv").write_text("q,a\nx,y\n", encoding="utf-8")
    with pytest.raises(UserFacingError, match="header must name the columns 'question' and 'answer'"):
        load_kb(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("question,answer\nx?,y\nz?,\n", encoding="utf-8")
    with pytest.raises(UserFacingError, match=r"line 3: field 'answer' is missing or empty"):
        load_kb(tmp_path / "b.csv")
    (tmp_path / "c.json").write_text('{"foo": 1}', encoding="utf-8")
    with pytest.raises(UserFacingError, match="expected a JSON list"):
        load_kb(tmp_path / "c.json")
    (tmp_path / "d.json").write_text('[{"question": "x?", "answer": "y"}, {"question": "z?"}]', encoding="utf-8")
    with pytest.raises(UserFacingError, match=r"record 2: field 'answer'"):
        load_kb(tmp_path / "d.json")
    (tmp_path / "e.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserFacingError, match="unsupported file type"):
        load_kb(tmp_path / "e.txt")
    with pytest.raises(UserFacingError, match="no file at"):
        load_kb(tmp_path / "missing.jsonl")


def test_many_errors_are_reported_together_but_capped(tmp_path):
    p = _write_jsonl(tmp_path / "kb.jsonl", [{"question": f"q{i}?"} for i in range(15)])
    with pytest.raises(UserFacingError) as err:
        load_kb(p)
    msg = str(err.value)
    assert "15 problem(s)" in msg and "line 10: field 'answer'" in msg and "(and 5 more)" in msg


def test_duplicate_questions_are_reported_not_fatal(tmp_path):
    p = _write_jsonl(tmp_path / "kb.jsonl", [
        {"id": "a", "question": "护照怎么办？", "answer": "x"},
        {"id": "b", "question": "其他问题？", "answer": "y"},
        {"id": "c", "question": " 护照怎么办？ ", "answer": "z"}])
    kb = load_kb(p)
    assert len(kb) == 3
    assert len(kb.duplicates) == 1
    assert "line 3 (id c) repeats the question of line 1 (id a)" in kb.duplicates[0]


def test_taipei_faq_loads_as_a_custom_kb(shared_data):
    kb = load_kb(shared_data / "qa" / "taipei_gov_faq.jsonl")
    assert len(kb) == 1875
    assert all(e.question and e.answer for e in kb.entries)
    assert kb.entries[0].id == "GIP_94145712"
    assert len(kb.duplicates) == 37  # same question posted by two departments: kept and reported
    assert not kb.has_english
