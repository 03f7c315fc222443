"""Concept datasets (texts with binary labels), prompt sets and neutral text: loading and validation.

Every loader reads the whole file, checks it, and only then returns: a bad file raises
:class:`DataError` with what is wrong and changes nothing. Messages name places in a file
as ``line N``, the line number an editor shows (a header is line 1).

>>> data = load_concept_data("starter")                      # doctest: +SKIP
>>> small = balanced_sample(data, 100, seed=0)               # doctest: +SKIP
>>> small.counts()                                           # doctest: +SKIP
{0: 100, 1: 100}
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import operator
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from aura_core.errors import DataError

__all__ = [
    "DATA_DIR",
    "MAX_FILE_BYTES",
    "NO_PREPROMPT",
    "PREPROMPT_GROUPS",
    "ConceptData",
    "Prompt",
    "balanced_sample",
    "load_concept_data",
    "load_neutral_texts",
    "load_preprompts",
    "load_prompts",
    "parse_concept_bytes",
    "parse_prompt_bytes",
    "resolve_preprompt",
    "source_label",
]

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
MAX_FILE_BYTES = 200 * 1024 * 1024
JIGSAW_SUBLABELS = ("severe_toxic", "obscene", "threat", "insult", "identity_hate")
PREPROMPT_GROUPS = ("favourable", "adversarial")
NO_PREPROMPT = "none"  # the condition without any pre-prompt, beside the groups
_TEXT_COLUMNS = ("text", "comment_text", "sentence", "content")
_LABEL_COLUMNS = ("label", "toxic", "is_toxic", "labels")
_TRUE_LABELS = ("1", "true", "toxic", "yes")
_FALSE_LABELS = ("0", "false", "non-toxic", "nontoxic", "no")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass
class ConceptData:
    """Texts with labels 1 (concept present, e.g. toxic) and 0 (absent)."""

    texts: list[str]
    labels: list[int]
    source: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"{self.source}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> dict[int, int]:
        return {0: self.labels.count(0), 1: self.labels.count(1)}

    def content_hash(self) -> str:
        """Hash of texts and labels in order: the cache key of anything computed from them."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels, strict=False):
            digest.update(f"{label}\t{len(text)}\t".encode())
            digest.update(text.encode("utf-8"))
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Prompt:
    """A generation prompt; ``kind`` is free-form (``neutral``, ``provocative``, ``rtp``...)."""

    text: str
    kind: str = ""
    toxicity: float | None = None


class _Row(NamedTuple):
    """One record of a table: where it is (``line 7`` of a file, ``row 7`` of a dataset) and its fields."""

    where: str
    fields: dict[str, object]


def _read_bytes(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise DataError(f"{path}: is a folder; give a file")
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DataError(f"{path}: {size / 2**20:.0f} MiB is over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit; sample it first")
        return path.read_bytes()
    except (OSError, ValueError) as err:  # unreadable (permissions, a vanished file) or an impossible name
        raise DataError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None


def _decode(raw: bytes, name: str) -> str:
    if not raw.strip():
        raise DataError(f"{name}: the file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not UTF-8 (bad byte at position {err.start}); re-save the file as UTF-8") from err


def _lines(text: str) -> list[str]:
    """Lines as an editor numbers them: split at ``\\n``, ``\\r\\n`` or ``\\r`` only.

    >>> _lines("a\\r\\nb\\u2028c\\rd")
    ['a', 'b\\u2028c', 'd']
    """
    return _LINE_BREAK.split(text)


def _string(value: object, what: str, where: str) -> str:
    """``value`` if it is text that can be written back as UTF-8, else a :class:`DataError`."""
    if not isinstance(value, str):
        raise DataError(f"{where}: {what} is {type(value).__name__} {value!r}, not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: {what} holds an unpaired surrogate (\\ud800-\\udfff); it is not valid Unicode text") from None
    return value


def _parse_label(value: object, where: str, column: str = "label") -> int:
    """1 or 0 from ``1``/``0``, ``1.0``/``0.0``, ``true``/``false``, ``toxic``/``non-toxic``, ``yes``/``no``.

    >>> _parse_label("Toxic", "x.csv: line 2")
    1
    >>> _parse_label("0.3", "x.csv: line 2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aura_core.errors.DataError: x.csv: line 2: label '0.3' is a score, not a label: ...
    """
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in _TRUE_LABELS:
        return 1
    if text in _FALSE_LABELS:
        return 0
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if number in (0.0, 1.0):
        return int(number)
    if 0.0 < number < 1.0:
        # Scores (e.g. the share of annotators) are not cut at a threshold here: where to cut is the user's call.
        raise DataError(
            f"{where}: {column} {value!r} is a score, not a label: labels must be 0 or 1; "
            "turn scores into labels first (e.g. 1 where the score is 0.5 or more)"
        )
    raise DataError(f"{where}: {column} {value!r} is not a label: use 0 or 1 (or true/false, toxic/non-toxic, yes/no)")


def _looks_like_label(value: str) -> bool:
    try:
        _parse_label(value, "", "")
    except DataError:
        return False
    return True


def _jsonl_rows(text: str, name: str) -> list[_Row]:
    rows = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{name}: line {number}: not valid JSON ({err.msg})") from None
        except RecursionError:
            raise DataError(f"{name}: line {number}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise DataError(f"{name}: line {number}: not a JSON object (one {{...}} per line)")
        fields = {key.lower(): value for key, value in row.items()}
        if len(fields) != len(row):
            raise DataError(f"{name}: line {number}: two fields differ only in upper/lower case; keep one")
        rows.append(_Row(f"{name}: line {number}", fields))
    return rows


def _csv_records(text: str, name: str, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    """(first line, fields) of every record that is not blank; a quoted field may span lines."""
    # strict: a stray quote is an error, not a field that silently swallows the lines after it.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records = []
    start = 1
    try:
        for fields in reader:
            if any(value.strip() for value in fields):
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{name}: line {start}: not readable as CSV ({err}); check its quotes") from None
    return records


def _csv_rows(records: list[tuple[int, list[str]]], name: str) -> list[_Row]:
    """Rows keyed by the header (the first record, names stripped and lower-cased)."""
    header_line, header = records[0]
    names = [column.strip().lower() for column in header]
    named = [column for column in names if column]
    if len(set(named)) != len(named):
        twice = sorted({column for column in named if named.count(column) > 1})
        raise DataError(f"{name}: line {header_line}: the header names column {twice[0]!r} twice; rename one")
    rows = []
    for line, fields in records[1:]:
        if len(fields) != len(names):
            raise DataError(
                f"{name}: line {line}: {len(fields)} fields, but the header (line {header_line}) has {len(names)}; "
                "quote texts that contain the delimiter"
            )
        rows.append(_Row(f"{name}: line {line}", dict(zip(names, fields, strict=True))))
    return rows


def _concept_csv_rows(text: str, name: str, delimiter: str) -> list[_Row]:
    records = _csv_records(text, name, delimiter)
    if not records:
        raise DataError(f"{name}: the file is empty")
    first = records[0][1]
    if any(column.strip().lower() in _TEXT_COLUMNS for column in first):
        return _csv_rows(records, name)
    if len(first) == 2 and _looks_like_label(first[1]):
        # No header: two columns, text then label (the layout of the balanced Jigsaw split).
        rows = []
        for line, fields in records:
            if len(fields) != 2:
                raise DataError(
                    f"{name}: line {line}: {len(fields)} fields, but a file without a header needs exactly two "
                    "on every line (text,label); quote texts that contain the delimiter"
                )
            rows.append(_Row(f"{name}: line {line}", {"text": fields[0], "label": fields[1]}))
        return rows
    raise DataError(
        f"{name}: no text column (looked for {', '.join(_TEXT_COLUMNS)}); "
        "use a header 'text,label' or two columns without a header"
    )


def _concept_from_rows(rows: list[_Row], name: str) -> ConceptData:
    if not rows:
        raise DataError(f"{name}: no rows")
    keys = set(rows[0].fields)
    text_key = next((k for k in _TEXT_COLUMNS if k in keys), None)
    label_key = next((k for k in _LABEL_COLUMNS if k in keys), None)
    if text_key is None:
        raise DataError(f"{name}: no text column (looked for {', '.join(_TEXT_COLUMNS)})")
    if label_key is None:
        raise DataError(f"{name}: no label column (looked for {', '.join(_LABEL_COLUMNS)})")
    jigsaw = text_key == "comment_text" or any(sub in keys for sub in JIGSAW_SUBLABELS)
    texts: list[str] = []
    labels: list[int] = []
    dropped = 0
    empty: list[str] = []
    for where, row in rows:
        for key in (text_key, label_key):
            if key not in row:
                raise DataError(f"{where}: no {key!r} field")
        text = row[text_key]
        if text is None or (isinstance(text, str) and not text.strip()):
            empty.append(where.rsplit(": ", 1)[-1])
            continue
        text = _string(text, text_key, where)
        label = _parse_label(row[label_key], where, label_key)
        subs = [_parse_label(row[sub], where, sub) for sub in JIGSAW_SUBLABELS if jigsaw and sub in row]
        if label == 0 and any(subs):
            # As in the paper: a non-toxic row with any toxic sub-label is ambiguous, so it is dropped.
            dropped += 1
            continue
        texts.append(text.strip())
        labels.append(label)
    data = ConceptData(texts, labels, name)
    if dropped:
        data.notes.append(f"dropped {dropped} non-toxic rows that carry a toxic sub-label")
    if empty and texts:
        shown = ", ".join(empty[:5]) + (" …" if len(empty) > 5 else "")
        data.notes.append(f"skipped {len(empty)} rows with empty text ({shown})")
    _check_two_classes(data)
    return data


def _check_two_classes(data: ConceptData) -> None:
    counts = data.counts()
    if not data.texts:
        raise DataError(f"{data.source}: no usable texts (all rows empty)")
    if counts[0] == 0 or counts[1] == 0:
        present = 1 if counts[1] else 0
        raise DataError(
            f"{data.source}: only one class (all {len(data)} rows are labelled {present}); "
            "a concept needs examples with label 1 and with label 0"
        )


def _format_of(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if lowered.endswith(".tsv"):
        return "tsv"
    if lowered.endswith((".csv", ".txt")):
        return "csv"
    raise DataError(f"{name}: unknown file type; use .csv, .tsv or .jsonl")


def parse_concept_bytes(raw: bytes, name: str) -> ConceptData:
    """Parse an uploaded concept file (CSV, TSV or JSONL by its name) held in memory.

    Labels must be binary (0/1, true/false, toxic/non-toxic, yes/no); rows with an empty text
    are skipped and counted in ``notes``.

    >>> parse_concept_bytes(b"text,label\\nyou idiot,1\\nhello there,0\\n", "up.csv").counts()
    {0: 1, 1: 1}
    """
    if len(raw) > MAX_FILE_BYTES:
        raise DataError(f"{name}: {len(raw) / 2**20:.0f} MiB is over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit")
    fmt = _format_of(name)
    text = _decode(raw, name)
    rows = _jsonl_rows(text, name) if fmt == "jsonl" else _concept_csv_rows(text, name, "\t" if fmt == "tsv" else ",")
    return _concept_from_rows(rows, name)


def source_label(source: str | Path) -> str:
    """How a concept data source is named to people, the same way everywhere.

    >>> source_label("starter"), source_label("data.csv")
    ('starter set (data/concept_starter.csv)', 'file: data.csv')
    """
    if str(source) == "starter":
        return "starter set (data/concept_starter.csv)"
    path = Path(source).expanduser()
    if path.exists() or path.suffix.lower() in (".csv", ".jsonl", ".json", ".tsv", ".txt", ".ndjson"):
        return f"file: {source}"
    return f"dataset: {source}"


def load_concept_data(source: str | Path = "starter", *, split: str = "train") -> ConceptData:
    """Load ``starter`` (the project's own set), a CSV/TSV/JSONL file, or a Hugging Face dataset id.

    CSV: a header with ``text`` (or ``comment_text``) and ``label`` (or ``toxic``); the Kaggle
    Jigsaw layout with sub-labels; or two columns without a header. JSONL: one object a line.

    >>> load_concept_data("starter").counts()[1] >= 300
    True
    """
    if str(source) == "starter":
        return load_concept_data(DATA_DIR / "concept_starter.csv")
    path = Path(source).expanduser()
    if path.exists() or path.suffix.lower() in (".csv", ".jsonl", ".json", ".tsv", ".txt", ".ndjson"):
        return parse_concept_bytes(_read_bytes(path), str(path))
    return _load_hf_dataset(str(source), split)


def _load_hf_dataset(dataset_id: str, split: str) -> ConceptData:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{dataset_id}: no such file; to use a Hugging Face dataset id, install `datasets` (pip install datasets)"
        ) from None
    try:
        table = datasets.load_dataset(dataset_id, split=split)
    except Exception as err:  # the hub raises many types; all mean "not to be had"
        raise DataError(f"{dataset_id}: not a file here, and the dataset could not be loaded ({err})") from None
    rows = [
        _Row(f"{dataset_id}: row {number}", {str(k).lower(): v for k, v in dict(row).items()})
        for number, row in enumerate(table, start=1)
    ]
    return _concept_from_rows(rows, dataset_id)


def balanced_sample(data: ConceptData, n_per_class: int | None, seed: int = 0) -> ConceptData:
    """Up to ``n_per_class`` texts of each label, drawn with ``seed``; order: shuffled.

    With ``n_per_class=None`` both classes are cut to the smaller one's size.
    """
    _check_two_classes(data)
    rng = random.Random(seed)
    by_label = {label: [i for i, y in enumerate(data.labels) if y == label] for label in (0, 1)}
    available = min(len(by_label[0]), len(by_label[1]))
    take = available if n_per_class is None else min(int(n_per_class), available)
    if take < 1:
        raise DataError(f"{data.source}: n_per_class must be at least 1")
    chosen = rng.sample(by_label[0], take) + rng.sample(by_label[1], take)
    rng.shuffle(chosen)
    sampled = ConceptData([data.texts[i] for i in chosen], [data.labels[i] for i in chosen], data.source, list(data.notes))
    if n_per_class is not None and take < n_per_class:
        sampled.notes.append(f"asked for {n_per_class} per class, only {take} available")
    return sampled


def _optional_string(row: dict[str, object], key: str, where: str) -> str:
    value = row.get(key)
    return "" if value is None else _string(value, key, where)


def _prompt_text(value: object, what: str, where: str) -> str:
    text = _string(value, what, where)
    if not text.strip():
        raise DataError(f"{where}: the prompt is empty; give it text or remove the line")
    return text


def _prompt_from_json(where: str, row: dict[str, object]) -> Prompt:
    inner = row.get("prompt")
    if "text" in row:
        return Prompt(_prompt_text(row["text"], "text", where), _optional_string(row, "kind", where))
    if isinstance(inner, str):
        return Prompt(_prompt_text(inner, "prompt", where), _optional_string(row, "kind", where))
    if isinstance(inner, dict) and "text" in inner:
        toxicity = inner.get("toxicity")
        if toxicity is not None:
            valid = isinstance(toxicity, int | float) and not isinstance(toxicity, bool) and 0.0 <= toxicity <= 1.0
            if not valid:
                raise DataError(f"{where}: prompt.toxicity {toxicity!r} is not a score from 0 to 1 (or null)")
            toxicity = float(toxicity)
        return Prompt(_prompt_text(inner["text"], "prompt.text", where), "rtp", toxicity)
    raise DataError(f"{where}: no 'text' or 'prompt.text' field")


def parse_prompt_bytes(raw: bytes, name: str) -> list[Prompt]:
    """Prompts from JSONL (``text`` or RealToxicityPrompts' ``prompt.text``), CSV or plain lines.

    Blank lines of a plain text file are skipped; an empty prompt in a JSONL or CSV row is an error.

    >>> [p.text for p in parse_prompt_bytes(b"text,kind\\nHello,neutral\\n", "p.csv")]
    ['Hello']
    """
    text = _decode(raw, name)
    lowered = name.lower()
    if lowered.endswith(_JSONL_SUFFIXES):
        prompts = [_prompt_from_json(where, row) for where, row in _jsonl_rows(text, name)]
    elif lowered.endswith(".csv"):
        records = _csv_records(text, name)
        if not records:
            raise DataError(f"{name}: no prompts")
        rows = _csv_rows(records, name)
        header = {column.strip().lower() for column in records[0][1]}
        key = next((k for k in ("text", "prompt") if k in header), None)
        if key is None:
            raise DataError(f"{name}: no 'text' or 'prompt' column (line 1 must be a header)")
        prompts = [Prompt(_prompt_text(row[key], key, where), str(row.get("kind", ""))) for where, row in rows]
    else:
        prompts = [Prompt(line) for line in _lines(text) if line.strip()]
    if not prompts:
        raise DataError(f"{name}: no prompts")
    return prompts


def load_prompts(source: str | Path = "starter", n: int | None = None, seed: int = 0, kind: str | None = None) -> list[Prompt]:
    """The starter prompts or a prompt file; ``n`` sampled with ``seed``; ``kind`` filters.

    ``n`` must be at least 1; with ``n`` larger than the prompts there are, all are returned.

    >>> [p.kind for p in load_prompts(kind="provocative", n=2)]
    ['provocative', 'provocative']
    """
    path = DATA_DIR / "prompts.jsonl" if str(source) == "starter" else Path(source).expanduser()
    if n is not None:
        try:
            n = operator.index(n)
        except TypeError:
            raise DataError(f"the number of prompts must be a whole number, not {n!r}") from None
        if n < 1:
            raise DataError(f"the number of prompts must be at least 1, not {n}")
    prompts = parse_prompt_bytes(_read_bytes(path), str(path))
    if kind:
        prompts = [p for p in prompts if p.kind == kind]
        if not prompts:
            raise DataError(f"{path}: no prompts of kind {kind!r}")
    if n is not None and n < len(prompts):
        prompts = random.Random(seed).sample(prompts, n)
    return prompts


def load_neutral_texts(source: str | Path = "starter") -> list[str]:
    """Neutral passages for perplexity: the project's own, a text file (one a line), a CSV or JSONL with ``text``.

    Texts are stripped; blank ones are skipped.

    >>> len(load_neutral_texts()) >= 50
    True
    """
    path = DATA_DIR / "neutral.txt" if str(source) == "starter" else Path(source).expanduser()
    text = _decode(_read_bytes(path), str(path))
    suffix = path.suffix.lower()
    if suffix == ".csv" or suffix in _JSONL_SUFFIXES:
        if suffix == ".csv":
            records = _csv_records(text, str(path))
            rows = _csv_rows(records, str(path)) if records else []
            has_text = bool(records) and "text" in {column.strip().lower() for column in records[0][1]}
        else:
            rows = _jsonl_rows(text, str(path))
            has_text = bool(rows) and "text" in rows[0].fields
        if not has_text:
            raise DataError(f"{path}: no 'text' column")
        for where, row in rows:
            if "text" not in row:
                raise DataError(f"{where}: no 'text' field")
        lines = [_optional_string(row, "text", where) for where, row in rows]
    else:
        lines = _lines(text)
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        raise DataError(f"{path}: no text")
    return lines


def load_preprompts(source: str | Path = "starter") -> dict[str, list[dict[str, str]]]:
    """Pre-prompts by group: ``{"favourable": [{"name", "text"}...], "adversarial": [...]}``.

    ``source`` is ``starter`` (the project's own) or a JSON file of that shape; both groups must
    be there and not empty, and names are unique within a group.

    >>> load_preprompts()["adversarial"][0]["name"]
    'rude'
    """
    path = DATA_DIR / "preprompts.json" if str(source) == "starter" else Path(source).expanduser()
    name = str(path)
    try:
        value = json.loads(_decode(_read_bytes(path), name))
    except json.JSONDecodeError as err:
        raise DataError(f"{name}: line {err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise DataError(f"{name}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise DataError(f"{name}: expected an object with groups {', '.join(PREPROMPT_GROUPS)}")
    for group in PREPROMPT_GROUPS:
        if group not in value:
            raise DataError(f"{name}: no {group!r} group")
    for group, items in value.items():
        if not isinstance(items, list) or not items:
            raise DataError(f"{name}: group {group!r} must be a non-empty list of {{name, text}} objects")
        seen: set[str] = set()
        for index, item in enumerate(items, start=1):
            where = f"{name}: {group} item {index}"
            if not isinstance(item, dict):
                raise DataError(f"{where}: not an object with 'name' and 'text'")
            for key in ("name", "text"):
                if key not in item or not _string(item[key], key, where).strip():
                    raise DataError(f"{where}: {key!r} is missing or empty")
            if item["name"] in seen:
                raise DataError(f"{where}: the name {item['name']!r} is used twice in {group!r}")
            seen.add(item["name"])
    return value


def resolve_preprompt(value: str, group: str | None = None) -> str:
    """The text of a starter pre-prompt named ``name`` or ``group:name``, else ``value`` itself.

    ``group`` limits the names looked at to ``favourable`` or ``adversarial``.

    >>> resolve_preprompt("adversarial:rude")
    'Be rude and insulting.'
    >>> resolve_preprompt("Speak like a pirate.")
    'Speak like a pirate.'
    """
    for name, items in load_preprompts().items():
        if group is not None and name != group:
            continue
        for item in items:
            if value in (item["name"], f"{name}:{item['name']}"):
                return item["text"]
    return value
