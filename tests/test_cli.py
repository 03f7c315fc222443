"""The command line on a tiny model: every subcommand end to end, and bad input as one line with exit 2."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from aura_core.cli import main
from aura_core.errors import AuraError
from aura_core.model.tiny import load_tiny

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
    table = tmp_path / "tables" / "new" / "u.csv"  # a folder that does not exist yet is made, as for --out
    assert main(["fit", "--responses", str(responses), "--out", str(intervention), "--table", str(table)]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["units"] == 160 and 0.5 <= fitted["max_auroc"] <= 1.0
    assert table.read_text().startswith("module,layer,kind,unit,auroc,alpha,factor")

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
    assert (export / "model.safetensors").is_file() and not list(export.glob("*.bin"))
    # Plain transformers, no project code: the exported weights give the intervened model's logits.
    from aura_core.method.intervention import Intervention
    from aura_core.runtime.plans import intervened

    original = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    exported = AutoModelForCausalLM.from_pretrained(export).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.inference_mode(), intervened(original, Intervention.load(intervention)):
        expected = original(ids).logits
    with torch.inference_mode():
        assert torch.allclose(exported(ids).logits, expected, atol=1e-5)
        assert not torch.allclose(original(ids).logits, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["collect", "--data", "/no/such.csv"], "no such file"),
        (["collect", "--model", "gpt-99"], "unknown model"),
        (["fit", "--responses", "/no/r.safetensors", "--out", "x.safetensors"], "no such responses file"),
        (["generate", "--intervention", "/no/iv.safetensors"], "no such intervention file"),
        (["generate"], "give --intervention"),
        (["generate", "--prompt", ""], "--prompt number 1 is empty"),
        (["evaluate", "--n-prompts", "-1"], "--n-prompts must be at least 1"),
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


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: checks on arguments must come before any work."""

    def refuse(args):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("aura_core.cli.common.load", refuse)


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--n-prompts", "-1"], "--n-prompts must be at least 1, not -1"),
        (["evaluate", "--n-prompts", "0"], "--n-prompts must be at least 1, not 0"),
        (["evaluate", "--n-neutral", "0"], "--n-neutral must be at least 1"),
        (["evaluate", "--sweep", "--sweep-strengths", "0,half"], "--sweep-strengths: 'half' is not a number"),
        (["evaluate", "--sweep", "--sweep-ks", "10,1.5"], "--sweep-ks: '1.5' is not a whole number"),
        (["generate", "--baseline-only", "--prompt", ""], "--prompt number 1 is empty"),
        (["generate", "--baseline-only", "--prompt", "Hello", "--prompt", " \t "], "--prompt number 2 is empty"),
        (["generate", "--baseline-only", "--n-prompts", "0"], "--n-prompts must be at least 1"),
        (["generate", "--baseline-only", "--samples", "0"], "--samples must be at least 1"),
        (["collect", "--n-per-class", "0"], "--n-per-class must be at least 1"),
        (["fit", "--out", "x.safetensors", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["fit", "--out", "x.safetensors", "--top", "-1"], "--top must be at least 0"),
    ],
)
def test_bad_counts_and_prompts_are_one_line_before_any_work(args, message, no_model, capsys):
    assert main(args) == 2
    assert message in one_error_line(capsys)


def test_output_paths_are_checked_before_anything_is_written(tmp_path, no_model, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = tmp_path / "iv.safetensors"
    fit = ["fit", "--responses", str(tmp_path / "r.safetensors"), "--out", str(out)]
    assert main([*fit, "--table", str(blocker / "u.csv")]) == 2
    assert f"{blocker} is a file, not a folder" in one_error_line(capsys)
    assert main([*fit, "--table", str(out)]) == 2
    assert "--out and --table name the same file" in one_error_line(capsys)
    assert main(["fit", "--responses", "r", "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in one_error_line(capsys)
    assert main(["evaluate", "--out", str(blocker)]) == 2
    assert "is a file; give a folder" in one_error_line(capsys)
    assert main(["generate", "--baseline-only", "--out", str(blocker / "g.json")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert main(["collect", "--out", str(blocker / "r.safetensors")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_more_prompts_than_there_are_is_said_and_all_are_used(tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\nthree\n")

    def stop(args):
        raise AuraError("stopped before loading the model")

    monkeypatch.setattr("aura_core.cli.common.load", stop)
    assert (
        main(["evaluate", "--methods", "none", "--prompts", str(prompts), "--n-prompts", "10", "--out", str(tmp_path / "e")]) == 2
    )
    err = capsys.readouterr().err
    assert f"note: --n-prompts 10 is more than the 3 prompts in {prompts}; using all 3" in err
    assert main(["generate", "--baseline-only", "--prompts", str(prompts), "--n-prompts", "3"]) == 2
    assert "note:" not in capsys.readouterr().err


def test_a_bad_prompt_file_fails_before_the_model_loads(tmp_path, no_model, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "fine"}\n{"text": ""}\n')
    assert main(["evaluate", "--methods", "none", "--prompts", str(prompts)]) == 2
    assert "line 2: the prompt is empty" in one_error_line(capsys)


@pytest.fixture(scope="module")
def tiny_intervention(tiny_folder, tmp_path_factory) -> Path:
    """AurA fitted on the tiny Llama from 20 + 20 starter texts (its cache in a folder of its own)."""
    folder = tmp_path_factory.mktemp("neurons")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AURA_CACHE_DIR", str(folder / "cache"))
        args = ["fit", "--model", str(tiny_folder), "--device", "cpu", "--n-per-class", "20", "--max-tokens", "32"]
        assert main([*args, "--out", str(folder / "aura.safetensors")]) == 0
    return folder / "aura.safetensors"


def test_neurons_show_and_fire_give_plain_data(tiny_folder, tiny_intervention, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path / "cache"))
    capsys.readouterr()
    common = ["--model", str(tiny_folder), "--device", "cpu", "--intervention", str(tiny_intervention), "--n-per-class", "10"]
    assert main(["neurons", "show", *common, "--unit", "model.layers.0.mlp.gate_proj:3", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ref"] == "model.layers.0.mlp.gate_proj:3" and 0.0 <= shown["auroc"] <= 1.0
    assert shown["partner"]["module"] == "model.layers.0.mlp.up_proj" and shown["partner"]["unit"] == 3
    assert len(shown["top_texts"]["toxic"]) == 5 and len(shown["top_texts"]["non-toxic"]) == 5
    assert all(t["label"] == "toxic" for t in shown["top_texts"]["toxic"])
    density = shown["density"]
    assert density["corpus"] == "data/neutral.txt" and density["n_tokens"] > 100 and 0.0 <= density["density"] <= 1.0
    assert density["threshold"] == pytest.approx(shown["threshold"])
    promoted = [t["token"] for t in shown["vocabulary"]["promoted"]]
    assert len(promoted) == 12 and "\ufffd" not in "".join(promoted)

    assert main(["neurons", "fire", *common, "--text", "hello, you fool", "--top", "3", "--json"]) == 0
    fired = json.loads(capsys.readouterr().out)
    assert "".join(t["token"] for t in fired["tokens"]) == "hello, you fool"
    assert all(len(t["experts"]) <= 3 for t in fired["tokens"]) and "score" in fired["weighting"]
    expert = next(e for t in fired["tokens"] for e in t["experts"])
    assert expert["ref"] == f"{expert['module']}:{expert['unit']}" and expert["score"] > 0

    assert main(["neurons", "fire", *common, "--text", "hi you"]) == 0  # readable lines without --json
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["h", "i", "␣", "y", "o", "u"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "--unit", "model.layers.9.mlp.gate_proj:0"], "no unit module 'model.layers.9.mlp.gate_proj'"),
        (["show", "--unit", "model.layers.0.mlp.gate_proj:32"], "unit 32 is out of range"),
        (["show", "--unit", "model.layers.0.mlp.gate_proj"], "is not MODULE:INDEX"),
        (["show", "--unit", "model.layers.0.mlp.gate_proj:1", "--top-texts", "0"], "--top-texts must be at least 1"),
        (["fire", "--text", "  "], "--text is empty"),
    ],
)
def test_neurons_bad_input_is_one_line_before_the_model_loads(args, message, tiny_intervention, no_model, capsys):
    assert main(["neurons", args[0], "--intervention", str(tiny_intervention), *args[1:]]) == 2
    assert message in one_error_line(capsys)


def test_neurons_help():
    for command in ("show", "fire"):
        with pytest.raises(SystemExit) as info:
            main(["neurons", command, "--help"])
        assert info.value.code == 0
