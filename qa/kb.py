"""Knowledge bases: the built-in government-service KB and user KBs in JSONL, CSV or JSON.

A KB is a tuple of :class:`Entry` (question + answer, optional id, category, English fields and other phrasings).
Loading validates every record and raises one :class:`~common.errors.UserFacingError` that names the
line (or record) and the field of each problem, so a user can fix their file in one go. Duplicate ids
are an error (answers would be ambiguous); duplicate questions are kept and *reported* in
``KnowledgeBase.duplicates`` (real FAQs, e.g. Taipei's, repeat a question under two departments).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import UserFacingError

BUILTIN_KB = Path(__file__).resolve().parent / "data" / "gov_services.jsonl"
REQUIRED = ("question", "answer")
OPTIONAL = ("id", "category", "category_en", "question_en", "answer_en")
# other ways users ask for the same entry ("相似问法"): a list of strings, or one string separated by "|" or
# line breaks (a CSV cell); indexed as extra phrasings (see qa.index)
PHRASINGS = ("alt_questions", "alt_questions_en")
# other column names accepted for them (an uploaded FAQ's "phrasings" column)
PHRASING_ALIASES = {"phrasings": "alt_questions", "phrasings_en": "alt_questions_en",
                    "similar_questions": "alt_questions"}
MAX_PHRASINGS = 50  # per field and entry
MAX_ERRORS_SHOWN = 10


@dataclass(frozen=True)
class Entry:
    id: str
    question: str
    answer: str
    category: str = ""
    category_en: str = ""
    question_en: str = ""
    answer_en: str = ""
    alt_questions: tuple[str, ...] = ()  # other phrasings of the question (Chinese / the KB's main language)
    alt_questions_en: tuple[str, ...] = ()  # other phrasings in English


@dataclass(frozen=True)
class KnowledgeBase:
    entries: tuple[Entry, ...]
    source: str  # "built-in" or the file path
    duplicates: tuple[str, ...] = field(default=())  # human-readable reports of repeated questions

    def __len__(self) -> int:
        return len(self.entries)

    def fingerprint(self) -> str:
        """sha256 over the entries' content (order included): changes whenever any text changes."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        # computed once per KB object: the entries are frozen, and the index cache key, the shipped-vectors check
        # and the calibration look-up all ask for it (~50 ms each for the 400-entry built-in KB)
        h = hashlib.sha256()
        for e in self.entries:
            h.update(json.dumps(asdict(e), ensure_ascii=False, sort_keys=True).encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()

    @property
    def has_english(self) -> bool:
        return any(e.question_en for e in self.entries)

    @property
    def n_phrasings(self) -> int:
        return sum(len(e.alt_questions) + len(e.alt_questions_en) for e in self.entries)


def load_kb(path: str | Path | None = None) -> KnowledgeBase:
    """Load and validate a KB; ``None`` or ``""`` means the built-in one."""
    if path is None or str(path) == "":
        return _from_records(_read_jsonl(BUILTIN_KB), source="built-in")
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserFacingError(f"Knowledge base: no file at {p}.")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        records = _read_jsonl(p)
    elif suffix == ".csv":
        records = _read_csv(p)
    elif suffix == ".json":
        records = _read_json(p)
    else:
        raise UserFacingError(f"Knowledge base {p.name}: unsupported file type {suffix or '(none)'}; "
                              "use .jsonl, .csv or .json with at least 'question' and 'answer'.")
    return _from_records(records, source=str(p))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: tolerate the BOM Excel writes into CSV/JSON
    except UnicodeDecodeError as err:
        raise UserFacingError(f"Knowledge base {path.name}: not UTF-8 text ({err}). Save it as UTF-8.") from err


def _read_jsonl(path: Path) -> list[tuple[str, object]]:
    out = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"line {n}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise UserFacingError(f"Knowledge base {path.name}, line {n}: not valid JSON ({err.msg}).") from err
    return out


def _read_csv(path: Path) -> list[tuple[str, object]]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    if not reader.fieldnames or not set(REQUIRED) <= {h.strip() for h in reader.fieldnames if h}:
        raise UserFacingError(f"Knowledge base {path.name}: the CSV header must name the columns "
                              f"'question' and 'answer' (found: {reader.fieldnames}).")
    # header is line 1, so the first record is line 2 (multi-line cells shift later lines; line_num tracks that)
    out = []
    for row in reader:
        out.append((f"line {reader.line_num}", {(k or "").strip(): v for k, v in row.items()}))
    return out


def _read_json(path: Path) -> list[tuple[str, object]]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise UserFacingError(f"Knowledge base {path.name}: not valid JSON (line {err.lineno}: {err.msg}).") from err
    if isinstance(data, dict):
        data = data.get("entries", data.get("data"))
    if not isinstance(data, list):
        raise UserFacingError(f"Knowledge base {path.name}: expected a JSON list of objects "
                              "(or {\"entries\": [...]}).")
    return [(f"record {i}", rec) for i, rec in enumerate(data, start=1)]


def _phrasings(value: object) -> tuple[str, ...] | str:
    """A phrasings field -> tuple of distinct non-empty strings, or an error message (str)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = value.replace("\r", "\n").replace("|", "\n").split("\n")
    elif isinstance(value, list):
        bad = [type(v).__name__ for v in value if not isinstance(v, str)]
        if bad:
            return f"must be a list of texts, found a {bad[0]}"
        items = value
    else:
        return f"must be a list of texts or one text separated by '|', got {type(value).__name__}"
    out = tuple(dict.fromkeys(" ".join(v.split()) for v in items if v.strip()))
    if len(out) > MAX_PHRASINGS:
        return f"has {len(out)} phrasings; at most {MAX_PHRASINGS} per entry are indexed"
    return out


def _from_records(records: Iterable[tuple[str, object]], source: str) -> KnowledgeBase:
    name = "built-in knowledge base" if source == "built-in" else f"Knowledge base {Path(source).name}"
    errors: list[str] = []
    entries: list[Entry] = []
    first_id: dict[str, str] = {}
    first_question: dict[str, tuple[str, str]] = {}
    duplicates: list[str] = []
    for where, rec in records:
        if not isinstance(rec, dict):
            errors.append(f"{where}: expected an object with 'question' and 'answer', got {type(rec).__name__}")
            continue
        values: dict[str, str] = {}
        bad = False
        for key in REQUIRED + OPTIONAL:
            value = rec.get(key)
            if value is None:
                value = ""
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "id":
                value = str(value)
            if not isinstance(value, str):
                errors.append(f"{where}: field '{key}' must be text, got {type(value).__name__}")
                bad = True
                continue
            values[key] = value.strip()
        for key in REQUIRED:
            if not bad and not values.get(key):
                errors.append(f"{where}: field '{key}' is missing or empty")
                bad = True
        phrasings: dict[str, tuple[str, ...]] = {}
        for alias, key in PHRASING_ALIASES.items():
            if rec.get(alias) not in (None, "") and rec.get(key) in (None, ""):
                rec = {**rec, key: rec[alias]}
        for key in PHRASINGS:
            parsed = _phrasings(rec.get(key))
            if isinstance(parsed, str):
                errors.append(f"{where}: field '{key}' {parsed}")
                bad = True
            else:
                phrasings[key] = parsed
        if bad:
            continue
        entry_id = values.pop("id") or f"entry-{len(entries) + 1}"
        if entry_id in first_id:
            errors.append(f"{where}: field 'id' repeats {entry_id!r} (first seen at {first_id[entry_id]})")
            continue
        first_id[entry_id] = where
        key = " ".join(values["question"].split()).lower()
        if key in first_question:
            other_where, other_id = first_question[key]
            duplicates.append(f"{where} (id {entry_id}) repeats the question of {other_where} (id {other_id}): "
                              f"{values['question'][:60]!r}")
        else:
            first_question[key] = (where, entry_id)
        entries.append(Entry(id=entry_id, **values, **phrasings))
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise UserFacingError(f"{name}: {len(errors)} problem(s): {shown}{more}.")
    if not entries:
        raise UserFacingError(f"{name}: no entries found; each needs at least 'question' and 'answer'.")
    return KnowledgeBase(entries=tuple(entries), source=source, duplicates=tuple(duplicates))
