"""Property-based fuzzing of every input parser: arbitrary bytes, damaged files and well-formed but wrong tables.

Each parser either returns exactly what the file says (texts, labels, prompts, tensors) or raises
the project's own :class:`~aura_core.errors.AuraError`; nothing else escapes, and an error about a
row names its line as an editor shows it.

The default run is bounded for CI: 100 examples per test, the same ones every run, under a
second per test (about 10 s for the module). A longer, randomised search, 5,000 examples per
test, about 5 minutes::

    AURA_FUZZ=long python -m pytest tests/test_fuzz.py
    AURA_FUZZ=long python -m pytest tests/test_fuzz.py -k concept     # one parser

``AURA_FUZZ_EXAMPLES=N`` sets the number of examples per test directly.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_tensors

from aura_core.base.data import (
    ConceptData,
    load_concept_data,
    load_neutral_texts,
    load_preprompts,
    load_prompts,
    parse_concept_bytes,
    parse_prompt_bytes,
)
from aura_core.errors import AuraError, DataError, InterventionError
from aura_core.method.intervention import Intervention
from aura_core.method.responses import Responses

LONG = os.environ.get("AURA_FUZZ", "").lower() == "long"
EXAMPLES = int(os.environ.get("AURA_FUZZ_EXAMPLES") or (5000 if LONG else 100))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,  # CI sees the same examples every run; the long search explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
WORK = Path(tempfile.mkdtemp(prefix="aura-fuzz-"))  # one folder for the whole run: fixtures of a test are not per example
atexit.register(shutil.rmtree, WORK, True)

TEXT_COLUMNS = ("text", "comment_text", "sentence", "content")
LABEL_COLUMNS = ("label", "toxic", "is_toxic", "labels")
SUBLABELS = ("severe_toxic", "obscene", "threat", "insult", "identity_hate")
KNOWN = {*TEXT_COLUMNS, *LABEL_COLUMNS, *SUBLABELS, "id", "kind", "prompt"}
SPELLINGS = {
    1: ("1", "1.0", "true", "TRUE", "True", "toxic", "Toxic", "yes", " 1 ", "1e0"),
    0: ("0", "0.0", "false", "FALSE", "non-toxic", "nontoxic", "no", "No", " 0", "-0"),
}
LINE_BREAK = re.compile(r"\r\n|\r|\n")

# No surrogates (every text can be written as UTF-8) and no U+FEFF, which at the start of a file is its byte-order mark.
no_bom = st.characters(codec="utf-8", exclude_characters="\ufeff")
texts = st.text(alphabet=no_bom, max_size=30)
solid_texts = texts.filter(lambda text: text.strip() != "")
names = st.sampled_from(["x.csv", "x.tsv", "x.txt", "x.jsonl", "x.json", "x.ndjson"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def file_with(raw: bytes, name: str) -> Path:
    path = WORK / name
    path.write_bytes(raw)
    return path


def label_value(cell: object) -> int | None:
    """The label a cell means (an oracle written apart from the parser), or None."""
    if isinstance(cell, bool):
        return int(cell)
    text = str(cell).strip().lower()
    if text in ("true", "toxic", "yes"):
        return 1
    if text in ("false", "non-toxic", "nontoxic", "no"):
        return 0
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def lines_before(text: str) -> int:
    """The editor line on which whatever follows ``text`` starts."""
    return len(LINE_BREAK.findall(text)) + 1


def defect_line(message: str) -> int:
    found = re.search(r": line (\d+): ", message)
    assert found, f"the error names no line: {message}"
    return int(found.group(1))


def check_concept(data: ConceptData) -> None:
    """What any concept data that loads must satisfy."""
    assert len(data.texts) == len(data.labels) > 0
    assert set(data.labels) == {0, 1}
    assert all(text == text.strip() and text for text in data.texts)


# Concept tables ----------------------------------------------------------------------------------


@st.composite
def concept_tables(draw: st.DrawFn) -> tuple[bytes, str, dict]:
    """A concept file and what loading it must give: ``{"texts", "labels", "empty"}`` or ``{"error", "line"}``."""
    layout = draw(st.sampled_from(["csv", "tsv", "headerless", "jsonl"]))
    n = draw(st.integers(2, 10))
    cells = draw(st.lists(texts, min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    label_cells: list[object] = [draw(st.sampled_from(SPELLINGS[label])) for label in labels]
    if layout == "jsonl":
        label_cells = [
            draw(st.sampled_from([cell, label, float(label), bool(label)]))
            for cell, label in zip(label_cells, labels, strict=True)
        ]
    defects = {
        "csv": ["score", "word", "more_fields", "fewer_fields", "twice"],
        "tsv": ["score", "word", "more_fields", "fewer_fields"],
        "headerless": ["score", "word", "more_fields", "fewer_fields"],
        "jsonl": ["score", "word", "no_text", "number_text", "not_object", "bad_json"],
    }[layout]
    defect = draw(st.none() | st.sampled_from(defects))
    row = draw(st.integers(1 if layout == "headerless" else 0, n - 1))
    if defect is not None and defect != "twice":
        cells[row] = draw(solid_texts)  # rows with an empty text are skipped before their label is read
    if defect == "score":
        score = draw(st.floats(0, 1, exclude_min=True, exclude_max=True))
        label_cells[row] = score if layout == "jsonl" and draw(st.booleans()) else repr(score)
    elif defect == "word":
        label_cells[row] = draw(st.text(min_size=1, max_size=8).filter(lambda s: s.strip() and label_value(s) is None))

    text_key = draw(st.sampled_from(TEXT_COLUMNS))
    label_key = draw(st.sampled_from(LABEL_COLUMNS))
    subs = draw(st.lists(st.sampled_from(SUBLABELS), unique=True, max_size=2)) if layout in ("csv", "tsv") else []
    sub_cells = [[draw(st.sampled_from(["0", "1"])) for _ in subs] for _ in range(n)]
    extra = draw(
        st.lists(
            st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\ufeff"), max_size=6).filter(
                lambda s: s.strip() and s.strip().lower() not in KNOWN
            ),
            unique_by=lambda s: s.strip().lower(),
            max_size=2,
        )
    )
    jigsaw = text_key == "comment_text" or bool(subs)

    if layout == "jsonl":
        lines = []
        for i in range(n):
            fields: dict[str, object] = {draw(st.sampled_from([text_key, text_key.upper()])): cells[i], label_key: label_cells[i]}
            fields.update({name: draw(json_values) for name in extra})
            if i == row and defect == "no_text":
                fields = {label_key: label_cells[i]}
            if i == row and defect == "number_text":
                fields[next(iter(fields))] = draw(st.integers() | st.floats(allow_nan=False))
            line = json.dumps(fields, ensure_ascii=draw(st.booleans()))
            if i == row and defect == "not_object":
                line = json.dumps([cells[i], label_cells[i]])
            if i == row and defect == "bad_json":
                line = line[: draw(st.integers(1, len(line) - 1))]
            lines.append(line)
        starts, text = [], ""
        for line in lines:
            text += draw(st.sampled_from(["", "\n", "  \r\n"]))
            starts.append(lines_before(text))
            text += line + draw(st.sampled_from(["\n", "\r\n"]))
    else:
        delimiter = "\t" if layout == "tsv" else ","
        header = [draw(st.sampled_from([text_key, text_key.upper(), f" {text_key} "])), label_key, *subs, *extra]
        if defect == "twice":
            header.append(draw(st.sampled_from([text_key.title(), label_key, *subs])) if subs else text_key.title())
        records = [] if layout == "headerless" else [header]
        for i in range(n):
            record = (
                [cells[i], str(label_cells[i])]
                if layout == "headerless"
                else [cells[i], str(label_cells[i]), *sub_cells[i], *extra]
            )
            if defect == "twice":
                record.append("x")
            if i == row and defect == "more_fields":
                record.append(draw(texts))
            if i == row and defect == "fewer_fields":
                record.pop()
            records.append(record)
        if layout == "headerless":
            assume(cells[0].strip().lower() not in TEXT_COLUMNS)  # such a first line reads as a header
        terminator = draw(st.sampled_from(["\r\n", "\n"]))
        # A writer ending lines with "\n" leaves a lone "\r" unquoted, so quote everything then.
        quoting = csv.QUOTE_ALL if terminator == "\n" else draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
        starts, text = [], ""
        for record in records:
            text += draw(st.sampled_from(["", "\n", " \r\n"]))
            starts.append(lines_before(text))
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=delimiter, lineterminator=terminator, quoting=quoting).writerow(record)
            text += buffer.getvalue()
        if layout != "headerless":
            starts = starts[1:]
    name = {"csv": "t.csv", "tsv": "t.tsv", "headerless": "t.csv", "jsonl": "t.jsonl"}[layout]
    if draw(st.booleans()):
        text = "\ufeff" + text

    if defect == "twice" or (defect == "no_text" and row == 0):  # a fault of the whole table, not of one line
        return text.encode(), name, {"error": defect, "line": None}
    if defect is not None:
        return text.encode(), name, {"error": defect, "line": starts[row]}
    kept_texts, kept_labels, empty = [], [], 0
    for i in range(n):
        if not cells[i].strip():
            empty += 1
            continue
        dropped = jigsaw and labels[i] == 0 and "1" in sub_cells[i]
        if not dropped:
            kept_texts.append(cells[i].strip())
            kept_labels.append(labels[i])
    return text.encode(), name, {"texts": kept_texts, "labels": kept_labels, "empty": empty}


@FUZZ
@given(concept_tables())
def test_concept_tables_load_exactly_as_written_or_name_the_bad_line(case):
    raw, name, expected = case
    if "error" in expected:
        with pytest.raises(DataError) as info:
            parse_concept_bytes(raw, name)
        message = str(info.value)
        if expected["line"] is not None:
            assert defect_line(message) == expected["line"], message
        return
    if set(expected["labels"]) != {0, 1}:
        with pytest.raises(DataError, match=r"only one class|no usable texts"):
            parse_concept_bytes(raw, name)
        return
    data = parse_concept_bytes(raw, name)
    assert data.texts == expected["texts"]
    assert data.labels == expected["labels"]
    assert any(f"skipped {expected['empty']} rows with empty text" in note for note in data.notes) == bool(expected["empty"])


def damaged(raw: bytes, draw: st.DrawFn) -> bytes:
    """``raw`` with a few bytes replaced, inserted or cut."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["replace", "insert", "cut"]))
        byte = draw(
            st.sampled_from([b'"', b",", b"\n", b"\r", b"\t", b"{", b"\x00", b"\xff", b"\xc3", b"0", b"."])
            | st.binary(min_size=1, max_size=1)
        )
        if edit == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        elif edit == "insert" or at == len(data):
            data[at:at] = byte
        else:
            data[at : at + 1] = byte
    return bytes(data)


@st.composite
def damaged_concept_files(draw: st.DrawFn) -> tuple[bytes, str]:
    raw, name, _ = draw(concept_tables())
    return damaged(raw, draw), name


@FUZZ
@given(st.one_of(st.tuples(st.binary(max_size=400), names), damaged_concept_files()))
def test_concept_parser_on_any_bytes_loads_or_raises_its_own_error(case):
    raw, name = case
    try:
        data = parse_concept_bytes(raw, name)
    except AuraError:
        return
    check_concept(data)


@FUZZ
@given(st.one_of(concept_tables().map(lambda case: case[:2]), damaged_concept_files()))
def test_load_concept_data_on_a_file_agrees_with_the_bytes_parser(case):
    raw, name = case
    path = file_with(raw, name)
    try:
        expected = parse_concept_bytes(raw, str(path))
    except AuraError as err:
        with pytest.raises(AuraError) as info:
            load_concept_data(path)
        assert str(info.value) == str(err)
        return
    loaded = load_concept_data(path)
    assert (loaded.texts, loaded.labels, loaded.notes) == (expected.texts, expected.labels, expected.notes)


# Prompts -----------------------------------------------------------------------------------------

one_line_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\ufeff"), max_size=30).filter(
    lambda s: s.strip() != ""
)


@st.composite
def prompt_files(draw: st.DrawFn) -> tuple[bytes, str, list[tuple[str, str, float | None]]]:
    """A valid prompt file and its prompts as (text, kind, toxicity)."""
    layout = draw(st.sampled_from(["txt", "csv", "jsonl", "rtp"]))
    n = draw(st.integers(1, 8))
    kinds = draw(st.lists(st.sampled_from(["", "neutral", "provocative"]), min_size=n, max_size=n))
    if layout == "txt":
        prompts = draw(st.lists(one_line_texts, min_size=n, max_size=n))
        gaps = [draw(st.sampled_from(["", "\n", "   \n"])) for _ in prompts]
        ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        text = "".join(gap + prompt + ending for gap, prompt in zip(gaps, prompts, strict=True))
        return text.encode(), "p.txt", [(p, "", None) for p in prompts]
    prompts = draw(st.lists(solid_texts, min_size=n, max_size=n))
    if layout == "csv":
        key = draw(st.sampled_from(["text", "prompt", "Text"]))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([key, "kind"])
        writer.writerows([p, k] for p, k in zip(prompts, kinds, strict=True))
        return buffer.getvalue().encode(), "p.csv", [(p, k, None) for p, k in zip(prompts, kinds, strict=True)]
    if layout == "jsonl":
        rows = [{"text": p, "kind": k} if k else {"text": p} for p, k in zip(prompts, kinds, strict=True)]
        text = "".join(json.dumps(row, ensure_ascii=draw(st.booleans())) + "\n" for row in rows)
        return text.encode(), "p.jsonl", [(p, k, None) for p, k in zip(prompts, kinds, strict=True)]
    scores = draw(st.lists(st.none() | st.floats(0, 1), min_size=n, max_size=n))
    rows = [{"prompt": {"text": p, "toxicity": s}, "continuation": {"text": "x"}} for p, s in zip(prompts, scores, strict=True)]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    return text.encode(), "p.jsonl", [(p, "rtp", s) for p, s in zip(prompts, scores, strict=True)]


@FUZZ
@given(prompt_files())
def test_prompt_files_load_exactly_as_written(case):
    raw, name, expected = case
    prompts = parse_prompt_bytes(raw, name)
    assert [(p.text, p.kind, p.toxicity) for p in prompts] == expected


@st.composite
def damaged_prompt_files(draw: st.DrawFn) -> tuple[bytes, str]:
    raw, name, _ = draw(prompt_files())
    return damaged(raw, draw), name


@FUZZ
@given(
    st.one_of(st.tuples(st.binary(max_size=300), st.sampled_from(["p.txt", "p.csv", "p.jsonl"])), damaged_prompt_files()),
    st.none() | st.integers(-2, 12),
    st.none() | st.sampled_from(["neutral", "provocative", "rtp"]),
)
def test_load_prompts_on_any_file_loads_or_raises_its_own_error(case, n, kind):
    raw, name = case
    path = file_with(raw, name)
    try:
        everything = load_prompts(path)
    except AuraError:
        with pytest.raises(AuraError):
            load_prompts(path, n=n, kind=kind)
        return
    assert everything and all(isinstance(p.text, str) and p.text.strip() for p in everything)
    assert all(p.toxicity is None or 0.0 <= p.toxicity <= 1.0 for p in everything)
    of_kind = [p for p in everything if not kind or p.kind == kind]
    if (n is not None and n < 1) or not of_kind:
        with pytest.raises(DataError):
            load_prompts(path, n=n, kind=kind)
        return
    chosen = load_prompts(path, n=n, kind=kind)
    assert len(chosen) == (len(of_kind) if n is None else min(n, len(of_kind)))
    assert all(p in of_kind for p in chosen)


# Pre-prompts -------------------------------------------------------------------------------------

preprompt_items = st.lists(
    st.fixed_dictionaries({"name": solid_texts, "text": solid_texts}), min_size=1, max_size=4, unique_by=lambda item: item["name"]
)


@st.composite
def preprompt_tables(draw: st.DrawFn) -> dict:
    table = {"favourable": draw(preprompt_items), "adversarial": draw(preprompt_items)}
    table.update(draw(st.dictionaries(st.text(max_size=8).filter(lambda g: g not in table), preprompt_items, max_size=2)))
    return table


@FUZZ
@given(preprompt_tables())
def test_preprompt_files_load_exactly_as_written(table):
    path = file_with(json.dumps(table, ensure_ascii=False).encode(), "pre.json")
    assert load_preprompts(path) == table


def wrong_preprompts(table: dict, draw: st.DrawFn) -> object:
    """``table`` with one part replaced by some other JSON value."""
    group = draw(st.sampled_from(sorted(table)))
    where = draw(st.sampled_from(["top", "group", "item", "field"]))
    value = draw(json_values)
    if where == "top":
        return value
    if where == "group":
        table[group] = value
    elif where == "item":
        table[group][0] = value
    else:
        table[group][0][draw(st.sampled_from(["name", "text", "other"]))] = value
    return table


@FUZZ
@given(st.data())
def test_preprompt_parser_on_any_input_loads_or_raises_its_own_error(data):
    choice = data.draw(st.sampled_from(["bytes", "json", "wrong"]))
    if choice == "bytes":
        raw = data.draw(st.binary(max_size=300))
    elif choice == "json":
        raw = json.dumps(data.draw(json_values)).encode()
    else:
        raw = json.dumps(wrong_preprompts(data.draw(preprompt_tables()), data.draw)).encode()
    try:
        loaded = load_preprompts(file_with(raw, "pre.json"))
    except AuraError:
        return
    assert {"favourable", "adversarial"} <= set(loaded)
    for items in loaded.values():
        assert items and all(isinstance(i["name"], str) and isinstance(i["text"], str) for i in items)
        assert all(i["name"].strip() and i["text"].strip() for i in items)
        assert len({i["name"] for i in items}) == len(items)


# Neutral texts -----------------------------------------------------------------------------------


@st.composite
def neutral_files(draw: st.DrawFn) -> tuple[bytes, str, list[str]]:
    layout = draw(st.sampled_from(["txt", "csv", "jsonl"]))
    if layout == "txt":
        lines = draw(
            st.lists(
                st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\ufeff"), max_size=20),
                min_size=1,
                max_size=8,
            )
        )
        raw = draw(st.sampled_from(["\n", "\r\n"])).join(lines).encode()
    elif layout == "csv":
        lines = draw(st.lists(texts, min_size=1, max_size=8))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["", "text", "concept"])
        writer.writerows([str(i), line, "neutral"] for i, line in enumerate(lines))
        raw = buffer.getvalue().encode()
    else:
        lines = draw(st.lists(texts, min_size=1, max_size=8))
        raw = "".join(json.dumps({"text": line}) + "\n" for line in lines).encode()
    return raw, f"n.{layout}", [line.strip() for line in lines if line.strip()]


@FUZZ
@given(neutral_files())
def test_neutral_text_files_load_exactly_as_written(case):
    raw, name, expected = case
    path = file_with(raw, name)
    if not expected:
        with pytest.raises(DataError):
            load_neutral_texts(path)
        return
    assert load_neutral_texts(path) == expected


@st.composite
def damaged_neutral_files(draw: st.DrawFn) -> tuple[bytes, str]:
    raw, name, _ = draw(neutral_files())
    return damaged(raw, draw), name


@FUZZ
@given(st.one_of(st.tuples(st.binary(max_size=300), st.sampled_from(["n.txt", "n.csv", "n.jsonl"])), damaged_neutral_files()))
def test_neutral_text_parser_on_any_bytes_loads_or_raises_its_own_error(case):
    raw, name = case
    try:
        lines = load_neutral_texts(file_with(raw, name))
    except AuraError:
        return
    assert lines and all(isinstance(line, str) and line == line.strip() and line for line in lines)


# Responses and interventions (safetensors) -------------------------------------------------------

module_names = st.text(min_size=1, max_size=12).filter(lambda s: s not in ("__labels__", "__metadata__"))
DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
]


@st.composite
def tensors(draw: st.DrawFn, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    shape = shape if shape is not None else tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    dtype = dtype or draw(st.sampled_from(DTYPES))
    count = 1
    for size in shape:
        count *= size
    values = draw(
        st.lists(st.floats(-3, 3, width=16) | st.sampled_from([0.0, 1.0, float("nan")]), min_size=count, max_size=count)
    )
    return torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and values, NaN where NaN."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.dtype.is_floating_point:
        return torch.equal(a, b)
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


@st.composite
def valid_responses(draw: st.DrawFn) -> Responses:
    n = draw(st.integers(1, 6))
    modules = draw(st.lists(module_names, min_size=1, max_size=3, unique=True))
    per_module = {name: draw(tensors((n, draw(st.integers(1, 4))), torch.float32)).nan_to_num(0.5) for name in modules}
    labels = torch.tensor(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=torch.int64)
    meta = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "units"), json_values, max_size=3))
    if draw(st.booleans()):
        meta["units"] = modules
    return Responses(per_module, labels, meta)


@FUZZ
@given(valid_responses())
def test_responses_files_load_exactly_as_saved(responses):
    path = responses.save(WORK / "r.safetensors")
    loaded = Responses.load(path)
    assert same(loaded.labels, responses.labels)
    assert set(loaded.per_module) == set(responses.per_module)
    assert all(same(loaded.per_module[name], values) for name, values in responses.per_module.items())
    assert loaded.meta == responses.meta


@st.composite
def safetensors_files(
    draw: st.DrawFn, header_key: str, special: str | None = None
) -> tuple[bytes, dict[str, torch.Tensor], object]:
    """A well-formed safetensors file with tensors and a JSON header of any shape, and what was written."""
    written = {name: draw(tensors()) for name in draw(st.lists(module_names, max_size=3, unique=True))}
    if special is not None and draw(st.booleans()):
        written[special] = draw(tensors())
    header = draw(
        json_values | st.fixed_dictionaries({}, optional={"units": json_values, "meta": json_values, "settings": json_values})
    )
    metadata = draw(st.sampled_from([{header_key: json.dumps(header)}, {header_key: draw(st.text(max_size=20))}, None]))
    raw = save_tensors({name: t.contiguous() for name, t in written.items()}, metadata=metadata)
    return raw, written, header


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300).map(lambda raw: (raw, None)), safetensors_files("aura", "__labels__").map(lambda f: (f[0], f[1]))
    )
)
def test_responses_loader_on_any_file_loads_or_raises_its_own_error(case):
    raw, written = case
    try:
        loaded = Responses.load(file_with(raw, "r.safetensors"))
    except DataError:
        return
    assert loaded.labels.ndim == 1 and bool(((loaded.labels == 0) | (loaded.labels == 1)).all())
    assert loaded.per_module and all(v.ndim == 2 and v.shape[0] == loaded.labels.shape[0] for v in loaded.per_module.values())
    assert written is not None and set(written) == {*loaded.per_module, "__labels__"}
    assert same(loaded.labels, written["__labels__"])
    assert all(same(loaded.per_module[name], written[name]) for name in loaded.per_module)


@st.composite
def valid_interventions(draw: st.DrawFn) -> Intervention:
    modules = draw(st.lists(module_names, min_size=1, max_size=3, unique=True))
    auroc = {name: draw(tensors((draw(st.integers(1, 4)),), torch.float64)).nan_to_num(0.5).abs().clamp(0, 1) for name in modules}
    units = sum(t.numel() for t in auroc.values())
    method = draw(st.sampled_from(["aura", "det0", "damp"]))
    k = None if method == "aura" else draw(st.integers(1, units))
    meta = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    return Intervention(auroc, method, strength=draw(st.floats(0, 1)), k=k, damp_alpha=draw(st.floats(0, 1)), meta=meta)


@FUZZ
@given(valid_interventions())
def test_intervention_files_load_exactly_as_saved(intervention):
    loaded = Intervention.load(intervention.save(WORK / "iv.safetensors"))
    assert loaded.settings() == intervention.settings() and loaded.meta == intervention.meta
    assert list(loaded.auroc) == list(intervention.auroc)
    assert all(same(loaded.auroc[name], values) for name, values in intervention.auroc.items())


@st.composite
def wrong_interventions(draw: st.DrawFn) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A saved intervention with one part of its header or tensors replaced."""
    intervention = draw(valid_interventions())
    header = {"settings": intervention.settings(), "meta": intervention.meta, "units": list(intervention.auroc)}
    written = dict(intervention.auroc)
    part = draw(st.sampled_from(["setting", "settings", "units", "meta", "tensor", "extra_setting"]))
    if part == "setting":
        header["settings"][draw(st.sampled_from(sorted(header["settings"])))] = draw(json_values)
    elif part == "extra_setting":
        header["settings"][draw(st.text(max_size=6))] = draw(json_values)
    elif part in ("settings", "units", "meta"):
        header[part] = draw(json_values)
    else:
        written[draw(st.sampled_from(sorted(written)))] = draw(tensors())
    raw = save_tensors({n: t.contiguous() for n, t in written.items()}, metadata={"aura_intervention": json.dumps(header)})
    return raw, written


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300).map(lambda raw: (raw, None)),
        safetensors_files("aura_intervention").map(lambda f: (f[0], f[1])),
        wrong_interventions(),
    )
)
def test_intervention_loader_on_any_file_loads_or_raises_its_own_error(case):
    raw, written = case
    try:
        loaded = Intervention.load(file_with(raw, "iv.safetensors"))
    except InterventionError:
        return
    assert loaded.method in ("aura", "det0", "damp") and 0.0 <= loaded.strength <= 1.0
    assert all(v.ndim == 1 and bool(((v >= 0) & (v <= 1)).all()) for v in loaded.auroc.values())
    assert written is not None and set(written) == set(loaded.auroc)
    assert all(same(loaded.auroc[name], written[name]) for name in loaded.auroc)
