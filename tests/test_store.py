"""The bounded store: LRU eviction within a budget, what is never evicted, abandoned resume folders, free space."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from aura_core.analysis.collect import collect_responses
from aura_core.base.data import ConceptData
from aura_core.base.store import (
    ABANDONED_AFTER_S,
    enforce_budget,
    ensure_free_space,
    mark_used,
    store_budget,
    store_usage,
)
from aura_core.errors import AuraError
from aura_core.model.architecture import discover_units

KEY = "0123456789abcdef0123"
OTHER = "fedcba9876543210fedc"


def _file(path: Path, size: int, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_the_least_recently_used_results_go_first_and_a_read_counts_as_a_use(tmp_path: Path) -> None:
    old = _file(tmp_path / "generations" / "old.json", 100, age_s=300)
    middle = _file(tmp_path / "generations" / "middle.json", 100, age_s=200)
    new = _file(tmp_path / "evaluations" / "reports" / "new.json", 100, age_s=100)
    mark_used(old)  # read just now: the newest use
    assert store_usage(tmp_path, budget=250).total == 300
    removed = enforce_budget(tmp_path, budget=250)
    assert removed == [middle]
    assert old.exists() and new.exists()
    assert enforce_budget(tmp_path, budget=250) == []  # within the budget: nothing more goes


def test_models_and_prepared_experts_with_their_responses_are_never_evicted(tmp_path: Path) -> None:
    model = _file(tmp_path / "models" / "smollm2-135m" / "model.safetensors", 1000, age_s=9000)
    vllm = _file(tmp_path / "vllm" / "model-abc" / "weights.bin", 500, age_s=9000)
    folded = _file(tmp_path / "vllm" / f"model-abc-{OTHER}" / "weights.bin", 500, age_s=9000)
    (tmp_path / "experts").mkdir()
    (tmp_path / "experts" / "prepared.json").write_text(json.dumps({"smollm2-135m": {"default": KEY}}))
    prepared = _file(tmp_path / "experts" / KEY / "recipe.json", 10, age_s=9000)
    other = _file(tmp_path / "experts" / OTHER / "recipe.json", 10, age_s=9000)
    kept_responses = _file(tmp_path / "responses" / f"{KEY}.safetensors", 200, age_s=9000)
    other_responses = _file(tmp_path / "responses" / f"{OTHER}.safetensors", 200, age_s=9000)
    usage = store_usage(tmp_path, budget=0)
    assert usage.kept == 1000 + 500 + 10 + 200 + len((tmp_path / "experts" / "prepared.json").read_bytes())
    removed = enforce_budget(tmp_path, budget=0)
    assert sorted(removed) == sorted([other.parent, other_responses, folded.parent])
    for path in (model, vllm, prepared, kept_responses, tmp_path / "experts" / "prepared.json"):
        assert path.exists(), path
    assert "kept: models and prepared experts" in store_usage(tmp_path, budget=0).describe()


def test_a_result_just_written_is_spared_even_over_the_budget(tmp_path: Path) -> None:
    older = _file(tmp_path / "generations" / "a.json", 100, age_s=50)
    written = _file(tmp_path / "generations" / "b.json", 100)
    assert enforce_budget(tmp_path, budget=10, keep=[written]) == [older]
    assert written.exists()


def test_abandoned_resume_folders_and_temporary_files_go_and_live_ones_stay_whatever_the_budget(tmp_path: Path) -> None:
    stale = tmp_path / "responses" / f"{OTHER}.parts"
    _file(stale / "part-00000.safetensors", 50, age_s=ABANDONED_AFTER_S + 60)
    os.utime(stale, (time.time() - ABANDONED_AFTER_S - 60,) * 2)
    live = tmp_path / "responses" / f"{KEY}.parts"
    _file(live / "part-00000.safetensors", 50, age_s=ABANDONED_AFTER_S + 60)
    _file(live / "part-00001.safetensors", 50)  # a writer saved a batch just now
    tmp = _file(tmp_path / "generations" / ".x.json.abc.tmp", 10, age_s=ABANDONED_AFTER_S + 60)
    writing = _file(tmp_path / "generations" / ".y.json.abc.tmp", 10)
    removed = enforce_budget(tmp_path, budget=0)
    assert sorted(removed) == sorted([stale, tmp])
    assert live.is_dir() and writing.exists()


def test_the_budget_is_a_setting_with_a_default_and_a_malformed_one_is_one_clear_line() -> None:
    assert store_budget({}) == 8 * 2**30
    assert store_budget({"AURA_STORE_BUDGET": "1.5G"}) == int(1.5 * 2**30)
    with pytest.raises(AuraError, match="AURA_STORE_BUDGET must be a size"):
        store_budget({"AURA_STORE_BUDGET": "-3G"})


def test_a_nearly_full_disk_refuses_a_collection_before_any_work(
    tiny_gpt2, toy_data: ConceptData, tmp_path: Path, monkeypatch
) -> None:
    units = discover_units(tiny_gpt2.model)
    monkeypatch.setenv("AURA_MIN_FREE", "1000T")  # more than any disk here has free: this one is nearly full
    calls: list[int] = []
    with pytest.raises(AuraError, match="the disk is nearly full: collecting 24 texts needs about"):
        collect_responses(
            tiny_gpt2.model, tiny_gpt2.tokenizer, toy_data, units, cache_dir=tmp_path, progress=lambda d, t: calls.append(d)
        )
    assert calls == [] and list(tmp_path.iterdir()) == []
    monkeypatch.delenv("AURA_MIN_FREE")
    ensure_free_space(tmp_path / "not" / "yet", need=1)  # a folder that does not exist yet is checked on its disk


def test_a_collection_into_the_store_evicts_older_responses_beyond_the_budget(
    tiny_gpt2, toy_data: ConceptData, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    units = discover_units(tiny_gpt2.model)
    first = collect_responses(tiny_gpt2.model, tiny_gpt2.tokenizer, toy_data, units)
    first_path = tmp_path / "responses" / f"{first.meta['cache_key']}.safetensors"
    size = first_path.stat().st_size
    os.utime(first_path, (time.time() - 60,) * 2)
    monkeypatch.setenv("AURA_STORE_BUDGET", str(int(size * 1.5)))  # room for one set of responses
    other = ConceptData(toy_data.texts[::-1], toy_data.labels[::-1], "toy reversed")
    second = collect_responses(tiny_gpt2.model, tiny_gpt2.tokenizer, other, units)
    assert not first_path.exists()
    assert (tmp_path / "responses" / f"{second.meta['cache_key']}.safetensors").is_file()
    assert store_usage(tmp_path).total <= int(size * 1.5)


def _a_result() -> dict[str, object]:
    frame = pd.DataFrame([{"side": "baseline", "sample": 0, "completion": " fine", "toxicity": 0.1}])
    return {"prompt": "p", "pre_prompt": "", "method": "aura", "strength": 1.0, "seed": 0, "samples": frame}


def test_a_finished_generation_is_returned_when_the_disk_is_full(tmp_path: Path, monkeypatch) -> None:
    from studio import resources

    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    real_replace = os.replace

    def full_disk(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("aura_core.base.files.os.replace", full_disk)  # the one fault the test injects
    shown = resources.store_generation(["full disk"], _a_result())
    assert shown["key"] == resources.generation_key(["full disk"])
    assert shown["samples"].completion.tolist() == [" fine"]
    assert "was not saved" in shown["unsaved"] and "the disk is full" in shown["unsaved"]
    assert str(tmp_path) not in shown["unsaved"]
    assert resources.load_generation(["full disk"]) is None
    assert [p.name for p in (tmp_path / "generations").iterdir()] == []  # no temporary file left behind
    monkeypatch.setattr("aura_core.base.files.os.replace", real_replace)
    stored = resources.store_generation(["full disk"], _a_result())
    assert "unsaved" not in stored and resources.load_generation(["full disk"]) is not None


def test_a_finished_generation_is_returned_when_the_store_cannot_be_written(tmp_path: Path, monkeypatch) -> None:
    from studio import resources

    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    (tmp_path / "generations").write_text("a file where the folder should be")
    shown = resources.store_generation(["no folder"], _a_result())
    assert "was not saved" in shown["unsaved"] and "cannot write here" in shown["unsaved"]
    assert shown["samples"].toxicity.tolist() == [0.1]


def test_the_generate_page_shows_a_result_it_cannot_store_and_the_sidebar_shows_the_store(monkeypatch, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AURA_STUDIO_MODEL", "tiny-gpt2")
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/find_experts.py").run()
    at.number_input(key="w:n_per_class").set_value(20)
    at.number_input(key="w:max_tokens").set_value(32)
    next(b for b in at.button if b.label == "Find experts").click().run()
    assert not at.exception, at.exception
    (tmp_path / "generations").write_text("a file where the folder should be: every write here fails")
    at.switch_page("pages/generate.py").run()
    at.slider(key="w:samples").set_value(2)
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception, at.exception
    assert any("was not saved" in w.value for w in at.warning)
    assert len([m for m in at.metric if "mean toxicity" in m.label]) == 3  # the result is on screen all the same
    assert any(c.value.startswith("store ") and "kept: models and prepared experts" in c.value for c in at.sidebar.caption)


def test_a_nearly_full_disk_refuses_an_evaluation_before_any_completion(tiny_gpt2, tmp_path: Path, monkeypatch) -> None:
    from aura_core.evaluation.protocol import EvalConfig, run_evaluation

    monkeypatch.setenv("AURA_MIN_FREE", "1000T")
    with pytest.raises(AuraError, match="the disk is nearly full: this evaluation needs"):
        run_evaluation(
            tiny_gpt2.model, tiny_gpt2.tokenizer, None, EvalConfig(n_prompts=2, methods=("none",)), out_dir=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()


def test_a_nearly_full_disk_refuses_a_model_conversion_in_one_line_and_leaves_no_half_folder(tmp_path: Path, monkeypatch):
    from aura_core.model.loading import PRESETS, _convert_preset, preset_status

    if preset_status("smollm2-135m") == "missing":
        pytest.skip("the default model's wheel is not installed (bash scripts/setup.sh)")
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))  # a cache with no converted model: this load converts
    monkeypatch.setenv("AURA_MIN_FREE", "1000T")
    with pytest.raises(AuraError, match=r"the disk is nearly full: converting smollm2-135m to a model folder needs about"):
        _convert_preset(PRESETS["smollm2-135m"])
    models = tmp_path / "models"
    assert not (models / "smollm2-135m").exists()
    assert not [p for p in models.iterdir() if p.is_dir()] if models.exists() else True  # no staging folder left


def test_the_result_a_prepared_demo_opens_is_kept_and_a_keeps_list_cannot_reach_outside(tmp_path: Path) -> None:
    (tmp_path / "experts").mkdir()
    (tmp_path / "experts" / "prepared.json").write_text(json.dumps({"smollm2-135m": {"default": KEY}}))
    _file(tmp_path / "experts" / KEY / "recipe.json", 10, age_s=9000)
    demo = _file(tmp_path / "generations" / "demo.json", 100, age_s=9000)
    other = _file(tmp_path / "generations" / "other.json", 100, age_s=10)
    outside = _file(tmp_path.parent / f"{tmp_path.name}-outside.json", 10)
    keeps = ["generations/demo.json", f"../{outside.name}"]
    (tmp_path / "experts" / KEY / "demo.json").write_text(json.dumps({"key": "demo", "keeps": keeps}))
    assert enforce_budget(tmp_path, budget=0) == [other]  # the newer result goes; the demo's stays
    assert demo.exists() and outside.exists()
    (tmp_path / "experts" / "prepared.json").write_text(json.dumps({}))  # no longer prepared: an ordinary result
    assert demo in enforce_budget(tmp_path, budget=0)
