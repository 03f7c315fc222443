import pytest
import torch

from aura_core.analysis.collect import CollectionCancelled, collect_responses
from aura_core.errors import DataError
from aura_core.method.responses import Responses
from aura_core.model.architecture import discover_units


def _collect(loaded, data, tmp_path, **kwargs):
    units = discover_units(loaded.model)
    kwargs.setdefault("cache_dir", tmp_path)
    return collect_responses(loaded.model, loaded.tokenizer, data, units, **kwargs)


def _unbatched(loaded, text: str, module_name: str, pooling: str = "max") -> torch.Tensor:
    module = dict(loaded.model.named_modules())[module_name]
    seen = {}
    handle = module.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    try:
        with torch.inference_mode():
            loaded.model(loaded.tokenizer(text, return_tensors="pt")["input_ids"])
    finally:
        handle.remove()
    return seen["out"][0].amax(dim=0) if pooling == "max" else seen["out"][0].mean(dim=0)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_batched_pooling_equals_one_text_at_a_time(tiny, toy_data, tmp_path, pooling):
    responses = _collect(tiny, toy_data, tmp_path, batch_size=5, max_tokens=64, use_cache=False, pooling=pooling)
    for name, values in responses.per_module.items():
        assert values.dtype == torch.float32 and values.shape[0] == len(toy_data)
        for row in (0, 7, 23):
            assert torch.allclose(values[row], _unbatched(tiny, toy_data.texts[row], name, pooling), atol=1e-5)
    assert torch.equal(responses.labels, torch.tensor(toy_data.labels))


def test_mean_pooling_and_token_budget(tiny_gpt2, toy_data, tmp_path):
    short = _collect(tiny_gpt2, toy_data, tmp_path, pooling="mean", max_tokens=3, use_cache=False)
    longer = _collect(tiny_gpt2, toy_data, tmp_path, pooling="mean", max_tokens=64, use_cache=False)
    name = short.units[0]
    assert not torch.allclose(short.per_module[name], longer.per_module[name])
    with pytest.raises(DataError, match="pooling"):
        _collect(tiny_gpt2, toy_data, tmp_path, pooling="median")


def test_cache_hit_and_file_round_trip(tiny_gpt2, toy_data, tmp_path):
    first = _collect(tiny_gpt2, toy_data, tmp_path)
    again = _collect(tiny_gpt2, toy_data, tmp_path)
    assert again.meta.get("from_cache") and not first.meta.get("from_cache")
    for name in first.units:
        assert torch.equal(first.per_module[name], again.per_module[name])
    saved = Responses.load(first.save(tmp_path / "r.safetensors"))
    assert saved.units == first.units and torch.equal(saved.labels, first.labels)


def _stop_after(batches: int):
    """A ``should_stop`` that asks the collection to stop once ``batches`` batches have run."""
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > batches

    return should_stop


def test_cancelled_run_resumes_where_it_stopped(tiny_gpt2, toy_data, tmp_path):
    reference = _collect(tiny_gpt2, toy_data, tmp_path / "ref", batch_size=4, chunk_texts=8)
    stop_after_three_batches = _stop_after(3)

    with pytest.raises(CollectionCancelled, match="run again to resume"):
        _collect(tiny_gpt2, toy_data, tmp_path / "run", batch_size=4, chunk_texts=8, should_stop=stop_after_three_batches)
    seen = []
    resumed = _collect(tiny_gpt2, toy_data, tmp_path / "run", batch_size=4, chunk_texts=8, progress=lambda d, t: seen.append(d))
    assert seen[0] == 8  # two batches were saved as one chunk; the third was not, so it reruns
    for name in reference.units:
        assert torch.allclose(resumed.per_module[name], reference.per_module[name], atol=1e-6)
    assert not list((tmp_path / "run").glob("*.parts"))


def test_corrupt_responses_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a readable responses file"):
        Responses.load(bad)


def test_a_resume_part_changed_on_disk_is_recomputed_not_trusted(tiny_gpt2, toy_data, tmp_path):
    reference = _collect(tiny_gpt2, toy_data, tmp_path / "ref", batch_size=4, chunk_texts=4)
    with pytest.raises(CollectionCancelled):
        _collect(tiny_gpt2, toy_data, tmp_path / "run", batch_size=4, chunk_texts=4, should_stop=_stop_after(2))
    (part, *_) = sorted((tmp_path / "run").rglob("part-*.safetensors"))
    data = bytearray(part.read_bytes())
    data[-3] ^= 0x40  # one flipped bit in the last stored value: the file still parses
    part.write_bytes(bytes(data))
    resumed = _collect(tiny_gpt2, toy_data, tmp_path / "run", batch_size=4, chunk_texts=4)
    for name in reference.units:
        assert torch.equal(resumed.per_module[name], reference.per_module[name])


def test_a_texts_responses_do_not_depend_on_the_texts_beside_it(real, tmp_path):
    """Experts are stored by their settings, not the batch size: any batching gives the same numbers, bit for bit."""
    from aura_core.base.data import balanced_sample, load_concept_data

    data = balanced_sample(load_concept_data("starter"), 12, seed=0)
    units = discover_units(real.model, "model.layers.(0|29).mlp.(up|down)_proj")
    runs = [
        collect_responses(real.model, real.tokenizer, data, units, max_tokens=32, batch_size=size, use_cache=False)
        for size in (24, 5, 1)
    ]
    for name, values in runs[0].per_module.items():
        for other in runs[1:]:
            assert torch.equal(values, other.per_module[name]), name
