"""The command line on a tiny model: every subcommand end to end, and bad input as one line with exit 2."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from aura_core.cli import main
from aura_core.tiny import load_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "tiny-llama"
    loaded = load_tiny("tiny-llama", seed=2)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def test_pipeline_end_to_end(tiny_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path / "cache"))
    model = ["--model", str(tiny_folder), "--device", "cpu"]
    responses = tmp_path / "r.safetensors"
    assert main(["collect", *model, "--n-per-class", "20", "--out", str(responses)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["texts"] == 40 and summary["units"] == 2 * (32 + 32 + 16)

    intervention = tmp_path / "aura.safetensors"
    assert main(["fit", "--responses", str(responses), "--out", str(intervention), "--table", str(tmp_path / "u.csv")]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["units"] == 160 and 0.5 <= fitted["max_auroc"] <= 1.0
    assert (tmp_path / "u.csv").read_text().startswith("module,layer,kind,unit,auroc,alpha,factor")

    out_csv = tmp_path / "gen.csv"
    args = [
        "generate",
        *model,
        "--intervention",
        str(intervention),
        "--compare",
        "--n-prompts",
        "3",
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--pre-prompt",
        "nice",
        "--format",
        "csv",
        "--out",
        str(out_csv),
    ]
    assert main(args) == 0
    with out_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["condition", "prompt_index", "sample", "prompt", "pre_prompt", "completion", "toxicity"]
    assert len(rows) == 2 * 3 * 2 and {r["condition"] for r in rows} == {"baseline", "aura"}
    assert all(r["pre_prompt"] == "Be nice and polite." and 0 <= float(r["toxicity"]) <= 1 for r in rows)

    run = tmp_path / "eval"
    args = [
        "evaluate",
        *model,
        "--intervention",
        str(intervention),
        "--n-prompts",
        "3",
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--n-neutral",
        "4",
        "--bootstrap",
        "100",
        "--sweep",
        "--sweep-strengths",
        "0,1",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert len(evaluated["metrics"]) == 2 * 3
    assert {"metrics", "generations", "json", "html", "sweep"} <= set(evaluated["reports"])
    assert (run / "report.html").is_file()

    export = tmp_path / "export"
    assert main(["export", *model, "--intervention", str(intervention), "--out", str(export)]) == 0
    assert AutoModelForCausalLM.from_pretrained(export) is not None
    assert (export / "model.safetensors").is_file() and not list(export.glob("*.bin"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["collect", "--data", "/no/such.csv"], "no such file"),
        (["collect", "--model", "gpt-99"], "unknown model"),
        (["fit", "--responses", "/no/r.safetensors", "--out", "x.safetensors"], "no such responses file"),
        (["generate", "--intervention", "/no/iv.safetensors"], "no such intervention file"),
        (["generate"], "give --intervention"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_two(args, message):
    result = subprocess.run([sys.executable, "-m", "aura_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_unit_pattern_that_matches_nothing(tiny_folder, capsys):
    assert main(["models", "--show", "--model", str(tiny_folder), "--units", r".*mlp\.nope"]) == 2
    assert "closest names" in capsys.readouterr().err


def test_help_for_every_subcommand():
    for command in ("models", "collect", "fit", "generate", "export", "evaluate"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
