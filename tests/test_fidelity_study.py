"""The fidelity study's plumbing, end to end on a tiny model with the smoke plan."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from studies.fidelity import main
from studies.ledger import WorkLedger


def test_compact_smoke_study_writes_a_report_without_the_pooling_stage(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["--model", "tiny-gpt2", "--smoke", "--compact", "--out-dir", str(tmp_path)]) == 0
    report = (tmp_path / "FIDELITY-tiny-gpt2.md").read_text(encoding="utf-8")
    assert "`python -m studies.fidelity --model tiny-gpt2 --compact`" in report
    assert "### 1. Noise floor" in report and "### 3. Unit families" in report and "### 4. Strength" in report
    assert "### 2. Pooling and length" not in report
    assert "**Operating point**" in report
    main_part, further = report.split("## Further prompts")
    named = ("| plain |", "| operating point |", "| AurA as in")
    rows = [line for line in main_part.splitlines() if line.startswith(named)]
    assert len([line for line in further.splitlines() if line.startswith(named)]) == 12, "3 models × 2 judges × 2 sets"
    assert len(rows) == 18, "plain, operating point and the paper's AurA under three pre-prompts and two judges"
    assert "split by category with seed 0 into a choosing half (4 prompts) and a reporting half (4)" in report
    assert "### Public prompts (`rtp_prompts_100.jsonl`)" in report and "### The team's prompts" in report
    assert report.count("Power (") == 6, "a power line per judge: the reporting half, the public prompts, the team's"
    assert "minutes of work over 1 run: " in report and "decoding on ours" in report
    assert "| last-word accuracy (change) |" in main_part
    accuracy = [line.split(" | ")[-2] for line in rows if "| none |" in line]
    assert len(accuracy) == 6 and all("%" in cell and "[" in cell for cell in accuracy), accuracy


def test_the_work_ledger_adds_up_interrupted_runs_per_engine(tmp_path):
    path = tmp_path / "work-full.json"
    first = WorkLedger(path, "vllm", since=time.perf_counter() - 120)
    first.book()
    second = WorkLedger(path, "ours", since=time.perf_counter() - 60)  # a resumed run on the other engine
    second.book()
    seconds = second.seconds()
    assert second.runs() == 2 and set(seconds) == {"vllm", "ours"}
    assert 120 <= seconds["vllm"] < 130 and 60 <= seconds["ours"] < 70
    assert second.summary().startswith("3 minutes of work over 2 runs: ")
    path.write_text("{not json", encoding="utf-8")  # cut short: the count starts anew instead of failing the study
    assert WorkLedger(path, "ours").runs() == 1


def test_a_study_suspended_with_ctrl_z_does_not_count_the_suspended_minutes(tmp_path):
    path = tmp_path / "work-full.json"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from studies.ledger import WorkLedger\n"
                f"ledger = WorkLedger(Path({str(path)!r}), 'ours'); ledger.follow_suspension()\n"
                "print('ready', flush=True); end = time.monotonic() + 6\n"
                "while time.monotonic() < end: ledger.book(); time.sleep(0.05)\n"
            ),
        ],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    time.sleep(1)
    child.send_signal(signal.SIGTSTP)  # what Ctrl-Z sends
    time.sleep(3)
    child.send_signal(signal.SIGCONT)  # fg
    assert child.wait(timeout=60) == 0
    # 6 s of the loop's own clock, of which about 3 s suspended: those are not work
    assert WorkLedger(path, "ours").seconds()["ours"] < 6 - 2


def test_a_paused_ledger_books_nothing_until_it_resumes(tmp_path):
    ledger = WorkLedger(tmp_path / "work.json", "ours", since=time.perf_counter() - 10)
    ledger.pause()
    time.sleep(0.3)
    ledger.book()
    assert 10 <= ledger.seconds()["ours"] < 10.2
    ledger.resume()
    time.sleep(0.2)
    ledger.book()
    assert 10.2 <= ledger.seconds()["ours"] < 10.5
