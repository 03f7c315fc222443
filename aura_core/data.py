"""Concept datasets (texts with binary labels), prompt sets and neutral text: loading and validation.

Every loader reads the whole file, checks it, and only then returns: a bad file raises
:class:`DataError` with what is wrong and changes nothing.

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
import random
from dataclasses import dataclass, field
from pathlib import Path

from aura_core.errors import DataError

__all__ = [
    "DATA_DIR",
    "MAX_FILE_BYTES",
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
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MAX_FILE_BYTES = 200 * 1024 * 1024
JIGSAW_SUBLABELS = ("severe_toxic", "obscene", "threat", "insult", "identity_hate")
_TEXT_COLUMNS = ("text", "comment_text", "sentence", "content")
_LABEL_COLUMNS = ("label", "toxic", "is_toxic", "labels")


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


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {size / 2**20:.0f} MiB is over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit; sample it first")
    return path.read_bytes()


def _decode(raw: bytes, name: str) -> str:
    if not raw.strip():
        raise DataError(f"{name}: the file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not UTF-8 (bad byte at position {err.start}); re-save the file as UTF-8") from err


def _parse_label(value: object, name: str, row: int) -> int:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "toxic", "yes"):
        return 1
    if text in ("0", "0.0", "false", "non-toxic", "nontoxic", "no"):
        return 0
    try:
        number = float(text)
    except ValueError:
        raise DataError(f"{name}: row {row}: label {value!r} is not 0/1") from None
    if 0.0 <= number <= 1.0:
        # Jigsaw-style fractional scores (share of annotators): toxic at 0.5 and above.
        return int(number >= 0.5)
    raise DataError(f"{name}: row {row}: label {value!r} is not 0/1")


def _looks_like_label(value: str) -> bool:
    try:
        _parse_label(value, "", 0)
    except DataError:
        return False
    return True


def _rows_from_text(text: str, name: str, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{name}: line {number} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{name}: line {number} is not a JSON object")
            rows.append(row)
        return rows
    try:
        reader = csv.reader(io.StringIO(text))
        table = [row for row in reader if row]
    except csv.Error as err:
        raise DataError(f"{name}: not a readable CSV ({err})") from None
    if not table:
        raise DataError(f"{name}: the file is empty")
    header = [column.strip() for column in table[0]]
    lowered = [column.lower() for column in header]
    if not any(column in _TEXT_COLUMNS for column in lowered):
        # No header: two columns, text then label (the layout of the balanced Jigsaw split).
        if all(len(row) == 2 for row in table[:50]) and _looks_like_label(table[0][1]):
            return [{"text": row[0], "label": row[1]} for row in table]
        raise DataError(
            f"{name}: no text column (looked for {', '.join(_TEXT_COLUMNS)}); "
            "use a header 'text,label' or two columns without a header"
        )
    rows = []
    for number, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{name}: row {number} has {len(row)} fields, the header has {len(header)}")
        rows.append(dict(zip(lowered, row, strict=False)))
    return rows


def _concept_from_rows(rows: list[dict], name: str) -> ConceptData:
    if not rows:
        raise DataError(f"{name}: no rows")
    keys = {key.lower() for key in rows[0]}
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
    for number, raw in enumerate(rows, start=1):
        row = {str(k).lower(): v for k, v in raw.items()}
        text = row.get(text_key)
        if not isinstance(text, str) or not text.strip():
            continue
        label = _parse_label(row.get(label_key), name, number)
        if jigsaw and label == 0 and any(_parse_label(row.get(sub, 0), name, number) for sub in JIGSAW_SUBLABELS if sub in row):
            # As in the paper: a non-toxic row with any toxic sub-label is ambiguous, so it is dropped.
            dropped += 1
            continue
        texts.append(text.strip())
        labels.append(label)
    data = ConceptData(texts, labels, name)
    if dropped:
        data.notes.append(f"dropped {dropped} non-toxic rows that carry a toxic sub-label")
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
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise DataError(f"{name}: unknown file type; use .csv or .jsonl")


def parse_concept_bytes(raw: bytes, name: str) -> ConceptData:
    """Parse an uploaded concept file (CSV or JSONL by its name) held in memory.

    >>> parse_concept_bytes(b"text,label\\nyou idiot,1\\nhello there,0\\n", "up.csv").counts()
    {0: 1, 1: 1}
    """
    if len(raw) > MAX_FILE_BYTES:
        raise DataError(f"{name}: {len(raw) / 2**20:.0f} MiB is over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit")
    fmt = _format_of(name)
    return _concept_from_rows(_rows_from_text(_decode(raw, name), name, fmt), name)


def load_concept_data(source: str | Path = "starter", *, split: str = "train") -> ConceptData:
    """Load ``starter`` (the project's own set), a CSV/JSONL file, or a Hugging Face dataset id.

    CSV: a header with ``text`` (or ``comment_text``) and ``label`` (or ``toxic``); the Kaggle
    Jigsaw layout with sub-labels; or two columns without a header. JSONL: one object a line.
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
    return _concept_from_rows([dict(row) for row in table], dataset_id)


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


def parse_prompt_bytes(raw: bytes, name: str) -> list[Prompt]:
    """Prompts from JSONL (``text`` or RealToxicityPrompts' ``prompt.text``), CSV or plain lines."""
    text = _decode(raw, name)
    lowered = name.lower()
    prompts: list[Prompt] = []
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        for row in _rows_from_text(text, name, "jsonl"):
            inner = row.get("prompt")
            if isinstance(inner, dict):
                prompts.append(Prompt(str(inner.get("text", "")), "rtp", inner.get("toxicity")))
            elif "text" in row or isinstance(inner, str):
                prompts.append(Prompt(str(row.get("text", inner)), str(row.get("kind", ""))))
            else:
                raise DataError(f"{name}: a row has no 'text' or 'prompt.text'")
    elif lowered.endswith(".csv"):
        rows = _rows_from_text(text, name, "csv")
        if not rows:
            raise DataError(f"{name}: no prompts")
        key = next((k for k in ("text", "prompt") if k in rows[0]), None)
        if key is None:
            raise DataError(f"{name}: no 'text' or 'prompt' column")
        prompts = [Prompt(row[key], str(row.get("kind", ""))) for row in rows]
    else:
        prompts = [Prompt(line) for line in text.splitlines()]
    prompts = [p for p in prompts if p.text.strip()]
    if not prompts:
        raise DataError(f"{name}: no prompts")
    return prompts


def load_prompts(source: str | Path = "starter", n: int | None = None, seed: int = 0, kind: str | None = None) -> list[Prompt]:
    """The starter prompts or a prompt file; ``n`` sampled with ``seed``; ``kind`` filters.

    >>> [p.kind for p in load_prompts(kind="provocative", n=2)]   # doctest: +SKIP
    ['provocative', 'provocative']
    """
    path = DATA_DIR / "prompts.jsonl" if str(source) == "starter" else Path(source).expanduser()
    prompts = parse_prompt_bytes(_read_bytes(path), str(path))
    if kind:
        prompts = [p for p in prompts if p.kind == kind]
        if not prompts:
            raise DataError(f"{path}: no prompts of kind {kind!r}")
    if n is not None and n < len(prompts):
        prompts = random.Random(seed).sample(prompts, n)
    return prompts


def load_neutral_texts(source: str | Path = "starter") -> list[str]:
    """Neutral passages for perplexity: the project's own, a text file (one a line) or a CSV with ``text``."""
    path = DATA_DIR / "neutral.txt" if str(source) == "starter" else Path(source).expanduser()
    text = _decode(_read_bytes(path), str(path))
    if path.suffix.lower() == ".csv":
        rows = _rows_from_text(text, str(path), "csv")
        if not rows or "text" not in rows[0]:
            raise DataError(f"{path}: no 'text' column")
        lines = [row["text"] for row in rows]
    else:
        lines = text.splitlines()
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        raise DataError(f"{path}: no text")
    return lines


def load_preprompts() -> dict[str, list[dict[str, str]]]:
    """The starter pre-prompts: ``{"favourable": [{"name", "text"}...], "adversarial": [...]}``."""
    return json.loads((DATA_DIR / "preprompts.json").read_text(encoding="utf-8"))


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
