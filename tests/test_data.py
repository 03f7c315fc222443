import csv
import io
import json

import pytest

from aura_core.base import data as data_module
from aura_core.base.data import (
    balanced_sample,
    load_concept_data,
    load_neutral_texts,
    load_preprompts,
    load_prompts,
    parse_concept_bytes,
    parse_prompt_bytes,
)
from aura_core.errors import DataError


def test_starter_set_is_balanced_and_large_enough():
    starter = load_concept_data("starter")
    counts = starter.counts()
    assert counts[0] >= 300 and counts[1] >= 300
    assert len({t.lower() for t in starter.texts}) == len(starter)


def test_starter_prompts_neutral_text_and_preprompts():
    prompts = load_prompts()
    assert len(prompts) >= 60
    assert {p.kind for p in prompts} == {"neutral", "provocative"}
    assert len(load_neutral_texts()) >= 50
    preprompts = load_preprompts()
    assert preprompts["favourable"] and preprompts["adversarial"]


def test_jigsaw_kaggle_layout_drops_ambiguous_non_toxic_rows():
    raw = (
        b"id,comment_text,toxic,severe_toxic,obscene,threat,insult,identity_hate\n"
        b"a,you are awful,1,0,0,0,1,0\n"
        b"b,nice edit thanks,0,0,0,0,0,0\n"
        b"c,borderline rude remark,0,0,1,0,0,0\n"
        b"d,great work,0,0,0,0,0,0\n"
    )
    parsed = parse_concept_bytes(raw, "train.csv")
    assert parsed.texts == ["you are awful", "nice edit thanks", "great work"]
    assert parsed.labels == [1, 0, 0]
    assert "dropped 1" in parsed.notes[0]


def test_real_files_load(shared_data):
    balanced = load_concept_data(shared_data / "jigsaw_balanced.csv")
    assert balanced.counts() == {0: 6090, 1: 6090}
    kaggle = load_concept_data(shared_data / "jigsaw_kaggle_sample.csv")
    assert kaggle.counts()[1] == 11
    rtp = load_prompts(shared_data / "rtp_prompts_100.jsonl")
    assert len(rtp) == 100 and rtp[0].toxicity is not None
    assert len(load_neutral_texts(shared_data / "wikipedia_sentences.csv")) == 100


def test_jsonl_and_headerless_csv():
    jsonl = b'{"text": "you fool", "label": 1}\n\n{"text": "hello", "label": 0}\n'
    assert parse_concept_bytes(jsonl, "x.jsonl").labels == [1, 0]
    headerless = b'"you fool",1\n"hello there",0\n'
    assert parse_concept_bytes(headerless, "x.csv").texts == ["you fool", "hello there"]


def test_balanced_sample_is_seeded_and_balanced():
    starter = load_concept_data("starter")
    a = balanced_sample(starter, 50, seed=1)
    b = balanced_sample(starter, 50, seed=1)
    c = balanced_sample(starter, 50, seed=2)
    assert a.texts == b.texts and a.counts() == {0: 50, 1: 50}
    assert a.texts != c.texts
    big = balanced_sample(starter, 10_000, seed=0)
    assert big.counts()[0] == big.counts()[1] and "only" in big.notes[-1]


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        (b"words,label\nhello,1\n", "x.csv", "no text column"),
        (b"text,score\nhello,1\nbye,0\n", "x.csv", "no label column"),
        (b"text,label\nhello,1\nbye,1\n", "x.csv", "only one class"),
        (b"", "x.csv", "empty"),
        (b"   \n", "x.jsonl", "empty"),
        ("text,label\ncaf\u00e9,1\nok,0\n".encode("latin-1"), "x.csv", "not UTF-8"),
        (b'{"text": "a", "label": 1}\n{oops\n', "x.jsonl", "line 2: not valid JSON"),
        (b"text,label\nhello,maybe\nbye,0\n", "x.csv", "line 2: label 'maybe' is not a label"),
        (b"text,label\nhello,1,extra\n", "x.csv", "line 2: 3 fields"),
        (b"text,label,Text\nhello,1,x\n", "x.csv", "names column 'text' twice"),
        (b'text,label\n"hello,1\nbye,0\n', "x.csv", "line 2: not readable as CSV"),
        (b'text,label\n"hi" there,1\nbye,0\n', "x.csv", "line 2: not readable as CSV"),
        (b'{"text": 5, "label": 1}\n', "x.jsonl", "line 1: text is int 5, not text"),
        (b'{"text": "a", "label": 1}\n{"label": 0}\n', "x.jsonl", "line 2: no 'text' field"),
        (b'{"text": "a", "Text": "b", "label": 1}\n', "x.jsonl", "line 1: two fields differ only in upper/lower case"),
        (b'{"text": "\\ud800", "label": 1}\n', "x.jsonl", "line 1: text holds an unpaired surrogate"),
        (b"[" * 100_000, "x.jsonl", "line 1: JSON nested too deeply|line 1: not valid JSON"),
        (b"text,label\nhello,1\n", "x.xlsx", "unknown file type"),
    ],
)
def test_bad_files_raise_clear_errors(raw, name, message):
    with pytest.raises(DataError, match=message):
        parse_concept_bytes(raw, name)


def test_oversized_and_missing_files_are_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "hello,1\nbye,0\n" * 100)
    monkeypatch.setattr(data_module, "MAX_FILE_BYTES", 100)
    before = big.read_bytes()
    with pytest.raises(DataError, match="over the"):
        load_concept_data(big)
    with pytest.raises(DataError, match="over the"):
        parse_concept_bytes(before, "big.csv")
    assert big.read_bytes() == before
    with pytest.raises(DataError, match="no such file"):
        load_concept_data(tmp_path / "missing.csv")


def test_prompt_files():
    rtp_line = json.dumps({"prompt": {"text": "So I said", "toxicity": 0.2}}).encode()
    assert parse_prompt_bytes(rtp_line, "p.jsonl")[0].toxicity == 0.2
    assert [p.text for p in parse_prompt_bytes(b"one\n\ntwo\n", "p.txt")] == ["one", "two"]
    with pytest.raises(DataError, match="no prompts"):
        parse_prompt_bytes(b"text\n\n", "p.csv")
    with pytest.raises(DataError, match="kind"):
        load_prompts(kind="nope")


def _headerless(rows: int, late_row: str) -> bytes:
    """A headerless two-column file whose line ``rows + 1`` is ``late_row``."""
    good = "".join(f"text number {i},{i % 2}\n" for i in range(rows))
    return (good + late_row + "\n" + "last text,0\n").encode()


@pytest.mark.parametrize(("late_row", "fields"), [("only one field", 1), ("a,1,0", 3)])
def test_headerless_rows_with_the_wrong_number_of_fields_name_their_line(late_row, fields):
    # Past the first 50 lines, where the layout used to be guessed from: once an IndexError, once silently cut.
    with pytest.raises(DataError, match=rf"^x\.csv: line 61: {fields} fields, but a file without a header needs exactly two"):
        parse_concept_bytes(_headerless(60, late_row), "x.csv")


@pytest.mark.parametrize("score", ["0.3", "0.7", "0.5", "1e-3"])
def test_fractional_labels_are_refused_not_cut_at_one_half(score):
    raw = f"text,label\nyou fool,1\nhello,0\nmaybe rude,{score}\n".encode()
    with pytest.raises(DataError, match=rf"^x\.csv: line 4: label '{score}' is a score, not a label"):
        parse_concept_bytes(raw, "x.csv")
    jsonl = f'{{"text": "a", "label": 1}}\n{{"text": "b", "label": {score}}}\n'.encode()
    with pytest.raises(DataError, match=r"line 2: label .* is a score"):
        parse_concept_bytes(jsonl, "x.jsonl")
    kaggle = f"id,comment_text,toxic,obscene\na,awful,1,0\nb,fine,0,{score}\n".encode()
    with pytest.raises(DataError, match=r"line 3: obscene .* is a score"):
        parse_concept_bytes(kaggle, "train.csv")


def test_binary_labels_in_every_supported_spelling():
    raw = b"text,label\na,1\nb,0\nc,1.0\nd,0.0\ne,TRUE\nf,false\ng,toxic\nh,non-toxic\ni,yes\nj,no\n"
    assert parse_concept_bytes(raw, "x.csv").labels == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert parse_concept_bytes(b'{"text": "a", "label": true}\n{"text": "b", "label": 0}\n', "x.jsonl").labels == [1, 0]


def test_every_data_error_names_the_line_an_editor_shows():
    # Line 1 header, line 2 a text spanning two lines, line 4 blank, line 5 the bad row.
    head = 'text,label\n"two\nlines",1\n\n'
    ragged = parse_error(head + "hello,0,extra\n")
    label = parse_error(head + "hello,0.4\n")
    assert ragged.startswith("x.csv: line 5: ") and label.startswith("x.csv: line 5: ")
    headerless = parse_error('"two\nlines",1\n\nhello,0.4\n')
    assert headerless.startswith("x.csv: line 4: ")
    jsonl = parse_error('{"text": "a", "label": 1}\n\n{"text": "b", "label": 0.4}\n', "x.jsonl")
    assert jsonl.startswith("x.jsonl: line 3: ")
    crlf = parse_error("text,label\r\na,1\r\nb,2\r\n")
    assert crlf.startswith("x.csv: line 3: ")


def parse_error(text: str, name: str = "x.csv") -> str:
    with pytest.raises(DataError) as info:
        parse_concept_bytes(text.encode(), name)
    return str(info.value)


def test_texts_are_exactly_those_written():
    tricky = ["a, with comma", 'quote " inside', "line\nbreak", "tab\there", "caf\u00e9 \u2028 sep"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    writer.writerows([text, i % 2] for i, text in enumerate(tricky))
    parsed = parse_concept_bytes(buffer.getvalue().encode(), "x.csv")
    assert parsed.texts == tricky and parsed.labels == [0, 1, 0, 1, 0]
    jsonl = "".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(tricky))
    assert parse_concept_bytes(jsonl.encode(), "x.jsonl").texts == tricky
    # U+2028 is a line break to str.splitlines() but not to JSON or an editor: it stays inside its line.
    raw = '{"text": "a\u2028b", "label": 1}\n{"text": "c", "label": 0}\n'.encode()
    assert parse_concept_bytes(raw, "x.jsonl").texts == ["a\u2028b", "c"]


def test_tsv_is_split_at_tabs_and_empty_texts_are_counted():
    parsed = parse_concept_bytes(b"text\tlabel\nhello, you\t1\n \t0\nbye\t0\n", "x.tsv")
    assert parsed.texts == ["hello, you", "bye"]
    assert parsed.notes == ["skipped 1 rows with empty text (line 3)"]


def test_prompt_counts_are_checked(tmp_path):
    for bad in (0, -1):
        with pytest.raises(DataError, match="at least 1"):
            load_prompts(n=bad)
    with pytest.raises(DataError, match="whole number"):
        load_prompts(n=2.5)
    everything = load_prompts()
    assert load_prompts(n=len(everything) + 100) == everything


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        (b'{"text": ""}\n', "p.jsonl", "line 1: the prompt is empty"),
        (b'{"text": "hi", "kind": 3}\n', "p.jsonl", "line 1: kind is int 3, not text"),
        (b'{"prompt": {"text": "hi", "toxicity": "high"}}\n', "p.jsonl", "line 1: prompt.toxicity 'high' is not a score"),
        (b'{"prompt": {"text": 7}}\n', "p.jsonl", "line 1: prompt.text is int 7, not text"),
        (b'{"other": 1}\n', "p.jsonl", "line 1: no 'text' or 'prompt.text' field"),
        (b"text,kind\nhi,neutral\n  ,neutral\n", "p.csv", "line 3: the prompt is empty"),
        (b"words\nhi\n", "p.csv", "no 'text' or 'prompt' column"),
    ],
)
def test_bad_prompt_files(raw, name, message):
    with pytest.raises(DataError, match=message):
        parse_prompt_bytes(raw, name)


def test_prompt_csv_with_a_prompt_column_and_plain_lines_split_like_an_editor():
    assert [p.text for p in parse_prompt_bytes(b"prompt\nSo I said\n", "p.csv")] == ["So I said"]
    assert [p.text for p in parse_prompt_bytes("one\u2028still one\r\ntwo\rthree".encode(), "p.txt")] == [
        "one\u2028still one",
        "two",
        "three",
    ]


def test_neutral_text_files(tmp_path):
    jsonl = tmp_path / "n.jsonl"
    jsonl.write_text('{"text": " one "}\n{"text": "two"}\n')
    assert load_neutral_texts(jsonl) == ["one", "two"]
    jsonl.write_text('{"text": "one"}\n{"body": "two"}\n')
    with pytest.raises(DataError, match="line 2: no 'text' field"):
        load_neutral_texts(jsonl)
    table = tmp_path / "n.csv"
    table.write_text("body\nhello\n")
    with pytest.raises(DataError, match="no 'text' column"):
        load_neutral_texts(table)
    with pytest.raises(DataError, match="is a folder"):
        load_neutral_texts(tmp_path)


def test_preprompt_files(tmp_path):
    starter = load_preprompts()
    path = tmp_path / "p.json"
    path.write_text(json.dumps(starter))
    assert load_preprompts(path) == starter
    bad = {
        "[]": "expected an object",
        '{"favourable": [{"name": "a", "text": "b"}]}': "no 'adversarial' group",
        '{"favourable": [], "adversarial": [{"name": "a", "text": "b"}]}': "'favourable' must be a non-empty list",
        '{"favourable": [{"name": "a"}], "adversarial": [{"name": "a", "text": "b"}]}': "favourable item 1: 'text' is missing",
        '{"favourable": [{"name": "a", "text": 1}], "adversarial": [{"name": "a", "text": "b"}]}': "item 1: text is int 1, not text",
        '{"favourable": [{"name": "a", "text": "b"}, {"name": "a", "text": "c"}], "adversarial": [{"name": "a", "text": "b"}]}': (
            "favourable item 2: the name 'a' is used twice"
        ),
        '{"favourable": ': "line 1: not valid JSON",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            load_preprompts(path)
