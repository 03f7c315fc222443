"""The benchmark harness on small inputs: fields present and fast paths equal to their references."""

from aura_core.bench import bench_auroc, bench_collect, bench_generate, bench_memory, machine_description, markdown_report
from aura_core.cli import main


def test_auroc_bench_compares_with_sklearn_exactly():
    result = bench_auroc(n_texts=200, n_units=305)
    assert result["max_abs_err"] <= 1e-9 and result["tied_units"] == 30
    assert result["speedup_vs_sklearn"] > 0 and result["units_per_s"] > 0


def test_collect_generate_and_memory_benches_run_on_tiny_models():
    collect = bench_collect("tiny-gpt2", n_texts=40, max_tokens=16, batch_size=8, repeats=1)
    assert collect["units"] == 2 * (64 + 16)
    assert collect["padding_fraction"] <= collect["padding_fraction_unsorted"]
    generate = bench_generate("tiny-llama", n_prompts=4, new_tokens=4, repeats=1)
    assert generate["folded_ratio"] > 0 and generate["hook_ratio"] > 0 and generate["units_dampened"] > 0
    memory = bench_memory("tiny-gpt2", n_texts=30, max_tokens=8)
    assert memory["stored_within_budget"] and memory["tensors_per_module"] == 1.0
    report = markdown_report([collect, generate, memory], machine_description(), "python -m aura_core bench ...")
    assert report.startswith("# Benchmarks") and "## collect" in report and "folded_ratio" in report


def test_unknown_benchmark_is_a_clear_error(capsys):
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark nope" in capsys.readouterr().err
