"""The benchmark harness: the interleaved timer with fake clocks, run conditions, and each benchmark on tiny inputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aura_core.cli import main as aura_main
from benchmarks import BenchmarkError, Conditions, Settings, Timing, interleaved, markdown_report, recorded_conditions
from benchmarks.__main__ import main as bench_main
from benchmarks.auroc import bench_auroc
from benchmarks.collect import bench_collect
from benchmarks.generate import bench_generate
from benchmarks.memory import bench_memory
from benchmarks.registry import resolve_names, run_benchmarks
from benchmarks.settings import bench_texts, default_data
from benchmarks.timing import machine_description, timing_fields

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """A clock that moves only when a path says how long it took."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def path(self, name: str, seconds: list[float], calls: list[str]):
        durations = iter(seconds)

        def run() -> str:
            calls.append(name)
            self.now += next(durations)
            return f"{name}{len(calls)}"

        return run


def test_paths_run_interleaved_after_untimed_warmup():
    clock, calls = FakeClock(), []
    times = interleaved(
        {"a": clock.path("a", [9.0, 1.0, 3.0, 2.0], calls), "b": clock.path("b", [9.0, 10.0, 30.0, 20.0], calls)},
        repeats=3,
        warmup=1,
        clock=clock,
    )
    assert calls == ["a", "b"] * 4
    assert times["a"].seconds == (1.0, 3.0, 2.0) and times["b"].seconds == (10.0, 30.0, 20.0)
    assert times["a"].last == "a7" and times["b"].last == "b8"


def test_median_min_and_spread():
    timing = Timing((4.0, 1.0, 2.0, 10.0))
    assert (timing.median, timing.min, timing.max) == (3.0, 1.0, 10.0)
    assert timing.spread == pytest.approx(3.0)
    assert timing_fields({"ours": timing, "ref": Timing((2.0, 6.0))}) == {
        "t_ours_s": 3.0,
        "t_ours_min_s": 1.0,
        "spread_ours": 3.0,
        "t_ref_s": 4.0,
        "t_ref_min_s": 2.0,
        "spread_ref": 1.0,
        "repeats": 2,
    }


def test_min_seconds_adds_rounds_beyond_repeats():
    clock, calls = FakeClock(), []
    times = interleaved(
        {"a": clock.path("a", [1.0] * 10, calls), "b": clock.path("b", [2.0] * 10, calls)},
        repeats=2,
        min_seconds=10.0,
        warmup=0,
        clock=clock,
    )
    assert times["a"].repeats == 4  # rounds of 3 s: 3, 6, 9, then 12 >= 10
    assert calls == ["a", "b"] * 4


def test_number_calls_a_fast_path_back_to_back_and_records_the_mean():
    clock, calls = FakeClock(), []
    times = interleaved(
        {"fast": clock.path("fast", [1.0, 2.0, 3.0, 5.0, 5.0, 5.0], calls), "slow": clock.path("slow", [60.0, 70.0], calls)},
        repeats=2,
        warmup=0,
        number={"fast": 3},
        clock=clock,
    )
    assert calls == ["fast"] * 3 + ["slow"] + ["fast"] * 3 + ["slow"]
    assert times["fast"].seconds == (2.0, 5.0) and times["slow"].seconds == (60.0, 70.0)
    assert times["fast"].last == "fast7"


def test_timer_rejects_bad_arguments():
    with pytest.raises(ValueError):
        interleaved({}, repeats=3)
    with pytest.raises(ValueError):
        interleaved({"a": lambda: None}, repeats=0)
    with pytest.raises(ValueError):
        interleaved({"a": lambda: None}, number={"a": 0})
    with pytest.raises(ValueError):
        Timing(())


def test_conditions_flag_load_above_the_core_count():
    loads = iter([(0.5, 0.4, 0.3), (2.6, 1.0, 0.5)])
    with recorded_conditions(load_average=lambda: next(loads)) as conditions:
        assert conditions.load_end is None
    assert conditions.load_start == (0.5, 0.4, 0.3) and conditions.load_end == (2.6, 1.0, 0.5)
    assert conditions.under_load == (2.6 > conditions.cores)
    assert Conditions((2.5, 0, 0), (1.0, 0, 0), cores=2).under_load
    assert not Conditions((1.9, 5, 5), (2.0, 5, 5), cores=2).under_load
    record = Conditions((3.0, 0, 0), None, cores=4).as_dict()
    assert record["under_load"] is False and record["load_avg_end"] is None


def test_every_result_carries_its_conditions_and_the_report_flags_load(monkeypatch, tmp_path, capsys):
    import benchmarks.registry as registry

    monkeypatch.setattr(registry, "BENCHMARKS", {"fake": lambda settings: {"name": "fake", "repeats": settings.repeats}})
    out = tmp_path / "BENCH.md"
    assert bench_main(["fake", "--json", "--repeats", "3", "--markdown", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["name"] == "fake" and result["repeats"] == 3
    assert set(result["conditions"]) >= {"load_avg_start", "load_avg_end", "cores", "torch_threads", "thread_pools"}
    assert result["under_load"] == result["conditions"]["under_load"]
    report = out.read_text()
    assert "python -m benchmarks fake --json --repeats 3" in report and "## fake" in report and "Conditions:" in report
    loaded = markdown_report([{**result, "under_load": True}], machine_description(), "cmd")
    quiet = markdown_report([{**result, "under_load": False}], machine_description(), "cmd")
    assert "Measured under load" in loaded and "Measured under load" not in quiet


def test_auroc_benchmark_is_exact_and_its_ratio_is_of_medians():
    result = bench_auroc(n_texts=200, n_units=305, repeats=3, fast_calls=2)
    assert result["max_abs_err"] <= 1e-9 and result["tied_units"] == 30 and result["repeats"] == 3
    for path in ("ours", "sklearn", "sort_floor"):
        assert 0 < result[f"t_{path}_min_s"] <= result[f"t_{path}_s"]
        assert result[f"spread_{path}"] >= 0
    # The rounded medians give back the reported ratio, up to their rounding.
    assert result["speedup_vs_sklearn"] == pytest.approx(result["t_sklearn_s"] / result["t_ours_s"], rel=0.01)
    assert result["floor_ratio"] == pytest.approx(result["t_ours_s"] / result["t_sort_floor_s"], rel=0.01)
    assert result["units_per_s"] == pytest.approx(305 / result["t_ours_s"], rel=0.01)


def test_collect_benchmark_on_a_tiny_model():
    result = bench_collect("tiny-gpt2", n_texts=40, max_tokens=16, batch_size=8, repeats=2)
    assert result["units"] == 2 * (64 + 16) and result["texts"] == 40 and result["repeats"] == 2
    assert result["padding_fraction"] <= result["padding_fraction_unsorted"]
    assert result["overhead"] == pytest.approx(result["t_collect_s"] / result["t_forward_s"] - 1, abs=0.05)


def test_generate_benchmark_on_a_tiny_model():
    result = bench_generate("tiny-llama", n_prompts=4, new_tokens=4, repeats=2)
    assert result["repeats"] == 2 and result["prompts"] == 4
    assert result["units_dampened"] > 0
    assert result["hook_ratio"] == pytest.approx(result["t_hooks_s"] / result["t_base_s"], rel=0.1)
    assert result["tokens_per_s_base"] == pytest.approx(16 / result["t_base_s"], rel=0.1)
    assert result["hooks_folded_same_text"] == "4/4"  # a call plan and folding are the same intervention


def test_serve_benchmark_on_a_tiny_model():
    from benchmarks.serve import bench_serve

    result = bench_serve("tiny-llama", sessions=(1, 3), new_tokens=3, samples=1, repeats=1)
    for count in (1, 3):
        for path in ("engine", "reference"):
            assert result[f"p95_{path}_{count}_s"] >= result[f"median_latency_{path}_{count}_s"] > 0
        assert result[f"speedup_{count}"] == pytest.approx(
            result[f"tokens_per_s_engine_{count}"] / result[f"tokens_per_s_reference_{count}"], rel=0.02
        )
    assert result["pair_speedup"] > 0 and result["single_ratio"] > 0
    assert set(result["goal"].replace(",", " ").split()) >= {"speedup_16", "p95_ratio_16", "pair_speedup", "single_ratio"}


def test_memory_benchmark_on_a_tiny_model():
    result = bench_memory("tiny-gpt2", n_texts=30, max_tokens=8)
    assert result["stored_within_budget"] and result["tensors_per_module"] == 1.0
    assert result["texts"] == 30 and result["units"] == 2 * (64 + 16)
    assert result["peak_rss_collect_mb"] >= result["peak_rss_load_mb"] > 0


def test_bench_texts_are_balanced_and_padded_to_length():
    texts = bench_texts(1000, "starter")
    assert len(texts) == 1000 and len(set(texts)) < 1000  # the starter set is smaller: repeated
    assert default_data(Path("/nowhere/checkout")) == "starter"
    assert Settings(data="x.csv").data == "x.csv"


def test_data_and_model_options_reach_the_benchmark(tmp_path, capsys):
    missing = tmp_path / "missing.csv"
    assert bench_main(["collect", "--model", "tiny-gpt2", "--repeats", "1", "--data", str(missing)]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    assert bench_main(["collect", "--model", "no-such-model", "--repeats", "1"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_unknown_benchmark_is_a_clear_error(capfd):
    assert aura_main(["bench", "nope"]) == 2  # the forwarder runs python -m benchmarks, options as they are
    assert "unknown benchmark nope" in capfd.readouterr().err
    assert bench_main(["auroc", "nope"]) == 2
    with pytest.raises(BenchmarkError, match="one of auroc"):
        resolve_names(["nope"])
    with pytest.raises(BenchmarkError):
        run_benchmarks(["nope"])


def test_forwarder_without_the_benchmarks_folder_is_one_line_exit_2(monkeypatch, tmp_path, capsys):
    from aura_core.cli import bench

    monkeypatch.setattr(bench, "BENCHMARKS_DIR", tmp_path / "benchmarks")
    assert aura_main(["bench", "auroc", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the benchmarks are not here") and "\n" not in err


def test_the_library_does_not_import_the_benchmarks():
    code = "import sys, aura_core, aura_core.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks'))"
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"


def test_protocol_benchmark_times_a_whole_evaluation_on_a_tiny_model():
    from benchmarks.protocol import bench_protocol

    result = bench_protocol("tiny-gpt2", n_prompts=2, samples=3)
    assert result["completions"] == 2 * 3 * 2  # prompts × samples × (plain, AurA)
    assert result["tokens_per_s"] == pytest.approx(
        result["completions"] * result["new_tokens_each"] / result["seconds"], rel=0.05
    )
    assert result["prefill_tokens_per_s"] > 0
    assert result["tokens_per_s_over_prefill"] == pytest.approx(result["tokens_per_s"] / result["prefill_tokens_per_s"], rel=0.05)


def test_rows_benchmark_times_each_row_count_on_the_same_rows():
    from benchmarks.rows import bench_rows

    result = bench_rows("tiny-gpt2", n_prompts=2, samples=3, counts=(1, 6), repeats=1)
    assert result["completions"] == 6 and {"rows_1_tokens_per_s", "rows_6_tokens_per_s", "rows_6_over_rows_1"} <= set(result)
    assert result["rows_6_over_rows_1"] == pytest.approx(result["t_rows_1_s"] / result["t_rows_6_s"], rel=0.01)


def test_an_update_replaces_only_the_benchmarks_it_ran(tmp_path):
    from benchmarks.report import markdown_report, merged_results

    path = tmp_path / "BENCHMARKS.md"
    path.write_text(
        markdown_report([{"name": "auroc", "x": 1}, {"name": "serve", "x": 2}], {"date": "d"}, "python -m benchmarks all")
    )
    merged, command = merged_results(path.read_text(), [{"name": "serve", "x": 5}, {"name": "protocol", "x": 9}])
    assert [(r["name"], r["x"]) for r in merged] == [("auroc", 1), ("serve", 5), ("protocol", 9)]
    assert command == "python -m benchmarks all"


def test_steering_tables_follow_vllms_merged_gate_and_up_projections():
    """vLLM's Llama MLP computes gate and up as one product (gate first): a table row is both factors, concatenated."""
    import torch

    from aura_core.method.fit import synthetic_intervention
    from aura_core.model.tiny import load_tiny
    from benchmarks.steering import steering_tables

    model = load_tiny("tiny-llama").model
    aura = synthetic_intervention(model, torch.Generator().manual_seed(0), low=0.5)
    tables = steering_tables(model, [aura, aura.with_strength(0.5)])
    factors = aura.factors()
    merged = tables["model.layers.1.mlp.gate_up_proj"]
    assert merged.shape[0] == 3 and bool((merged[0] == 1).all())
    gate, up = factors["model.layers.1.mlp.gate_proj"], factors["model.layers.1.mlp.up_proj"]
    assert torch.equal(merged[1], torch.cat([gate, up]).float())
    assert torch.equal(
        tables["model.layers.0.mlp.down_proj"][2], aura.with_strength(0.5).factors()["model.layers.0.mlp.down_proj"].float()
    )
    assert sorted(tables) == sorted(f"model.layers.{i}.mlp.{m}" for i in (0, 1) for m in ("gate_up_proj", "down_proj"))
