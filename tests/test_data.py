import json

import pytest

from aura_core import data as data_module
from aura_core.data import (
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
        (b'{"text": "a", "label": 1}\n{oops\n', "x.jsonl", "line 2 is not valid JSON"),
        (b"text,label\nhello,maybe\nbye,0\n", "x.csv", "not 0/1"),
        (b"text,label\nhello,1,extra\n", "x.csv", "3 fields"),
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
