"""Pooled unit responses: batched, padding-aware forward passes with an on-disk, resumable cache.

For every unit, the response to a text is the max (or mean) of the unit's output over the
text's real tokens. One fp32 buffer per module (texts × units) is written in place.

>>> responses = collect_responses(loaded.model, loaded.tokenizer, data, units)   # doctest: +SKIP
>>> responses.per_module["model.layers.0.mlp.up_proj"].shape                      # doctest: +SKIP
torch.Size([400, 1536])
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from aura_core.base.batching import Tokenizer, length_sorted_batches, pad_right, padding_fraction, tokenize_texts
from aura_core.base.data import ConceptData
from aura_core.base.files import CONTENT_KEY, atomic_path, content_hash, read_safetensors
from aura_core.base.store import enforce_budget, ensure_free_space, mark_used
from aura_core.errors import AuraError, DataError
from aura_core.method.responses import Responses, responses_cache_key
from aura_core.model.architecture import unit_width
from aura_core.model.loading import cache_root, model_fingerprint
from aura_core.runtime.hooks import CallPlan, call_plan
from aura_core.runtime.inline import INLINE
from aura_core.runtime.runner import Runner

__all__ = ["MAX_TOKENS", "POOLINGS", "CollectionCancelled", "collect_responses"]

Progress = Callable[[int, int], None]
POOLINGS = ("max", "mean")
"""How a unit's outputs over a text's tokens become one response; the paper uses ``max``."""
MAX_TOKENS = 64
"""The default token budget per text: the paper's texts are short, and 64 tokens hold most."""


class CollectionCancelled(AuraError):
    """Raised when a caller asks a collection to stop; finished chunks stay cached for a resume."""


class _Pooler:
    """Recorders that pool each module's output straight into its preallocated buffer.

    Pooled values are float32 whatever the model computes in. A maximum of bfloat16 outputs
    is the maximum of their float32 values, so it is taken first and cast once; a mean adds
    up in float32, since bfloat16 sums would round at every token.
    """

    def __init__(self, names: list[str], buffers: dict[str, torch.Tensor], pooling: str) -> None:
        self.buffers = buffers
        self.pooling = pooling
        self.rows: torch.Tensor | None = None
        self.full = 0
        self.tail_mask: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.plan = CallPlan(record={name: self._recorder(name) for name in names})

    def _recorder(self, name: str) -> Callable[[torch.Tensor], None]:
        def record(hidden: torch.Tensor) -> None:
            assert self.rows is not None and self.tail_mask is not None and self.counts is not None
            # Padding sits on the right and batches hold texts of similar length, so positions
            # before the shortest text's end need no mask: only the short tail is masked (copied).
            head, tail = hidden[:, : self.full], hidden[:, self.full :]
            if self.pooling == "max":
                pooled = head.amax(dim=1)
                if tail.shape[1]:
                    pooled = torch.maximum(pooled, tail.masked_fill(~self.tail_mask, float("-inf")).amax(dim=1))
            else:
                pooled = head.sum(dim=1, dtype=torch.float32)
                if tail.shape[1]:
                    pooled = pooled + (tail * self.tail_mask).sum(dim=1, dtype=torch.float32)
                pooled = pooled / self.counts
            self.buffers[name].index_copy_(0, self.rows, pooled.to(self.buffers[name].device, torch.float32))

        return record

    def set_batch(self, rows: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.rows = rows
        lengths = attention_mask.sum(dim=1)
        self.full = int(lengths.min())
        self.tail_mask = attention_mask[:, self.full :].bool().unsqueeze(-1)
        self.counts = lengths.unsqueeze(1).clamp(min=1)


def collect_responses(
    model: nn.Module,
    tokenizer: Tokenizer,
    data: ConceptData,
    units: list[str],
    *,
    pooling: str = POOLINGS[0],
    max_tokens: int = MAX_TOKENS,
    batch_size: int = 32,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    model_name: str = "",
    chunk_texts: int | None = None,
    runner: Runner = INLINE,
) -> Responses:
    """Pooled responses of ``units`` to ``data.texts``, from the cache when already computed.

    Work is saved every ``chunk_texts`` texts (by default every batch), so an interrupted or cancelled run resumes
    where it stopped. ``progress(done, total)`` is called after each batch. Each batch's
    forward pass runs on ``runner`` (a server's shared engine, or inline).
    """
    if pooling not in POOLINGS:
        raise DataError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if batch_size < 1:
        raise DataError("batch_size must be at least 1")
    modules = dict(model.named_modules())
    missing = [name for name in units if name not in modules]
    if missing:
        raise DataError(f"units not in this model: {', '.join(missing[:5])}")
    fingerprint = model_fingerprint(model)
    data_hash = data.content_hash()
    key = responses_cache_key(fingerprint, data_hash, units, pooling, max_tokens)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "responses"
    final_path = folder / f"{key}.safetensors"
    parts_dir = folder / f"{key}.parts"
    meta = {
        "model": model_name,
        "fingerprint": fingerprint,
        "data_source": data.source,
        "data_hash": data_hash,
        "n_texts": len(data),
        "units": units,
        "pooling": pooling,
        "max_tokens": max_tokens,
        "cache_key": key,
    }
    total = len(data)
    if use_cache and final_path.is_file():
        if progress:
            progress(total, total)
        cached = Responses.load(final_path)
        mark_used(final_path)
        cached.meta["from_cache"] = True
        return cached

    if use_cache:  # the parts and the final file, each texts × units float32: refused before any work
        need = 8 * total * sum(unit_width(modules[name]) for name in units)
        ensure_free_space(folder, need, f"collecting {total:,} texts")
    token_ids = tokenize_texts(tokenizer, data.texts, max_tokens)
    lengths = [len(ids) for ids in token_ids]
    batches = length_sorted_batches(lengths, batch_size)
    device = next(model.parameters()).device
    buffers = {name: torch.empty((total, unit_width(modules[name])), dtype=torch.float32) for name in units}
    done = torch.zeros(total, dtype=torch.bool)
    if use_cache:
        _load_parts(parts_dir, buffers, done)
    meta["padding_fraction"] = padding_fraction(lengths, batches)

    # Chunks are runs of whole batches in sorted order, so a resume skips them whole.
    per_chunk = max(1, (chunk_texts or batch_size) // batch_size)
    chunks = [batches[i : i + per_chunk] for i in range(0, len(batches), per_chunk)]
    completed = int(done.sum())
    if progress:
        progress(completed, total)
    pooler = _Pooler(units, buffers, pooling)

    def forward(batch: list[int]) -> None:
        input_ids, attention = pad_right([token_ids[i] for i in batch], tokenizer.pad_token_id, device)
        pooler.set_batch(torch.tensor(batch), attention)
        with call_plan(model, pooler.plan), torch.inference_mode():
            model(input_ids=input_ids, attention_mask=attention, use_cache=False)

    for chunk_index, chunk in enumerate(chunks):
        chunk_rows = [i for batch in chunk for i in batch]
        if bool(done[chunk_rows].all()):
            continue
        for batch in chunk:
            if should_stop is not None and should_stop():
                raise CollectionCancelled(f"stopped after {completed} of {total} texts; run again to resume")
            runner.run(partial(forward, batch), priority="bulk")
            completed += len(batch)
            if progress:
                progress(completed, total)
        if use_cache:
            _save_part(parts_dir, chunk_index, chunk_rows, buffers)
        done[chunk_rows] = True

    result = Responses(buffers, torch.tensor(data.labels, dtype=torch.int64), meta)
    if use_cache:
        result.save(final_path)
        shutil.rmtree(parts_dir, ignore_errors=True)
        if cache_dir is None:  # the project's store; a folder the caller named is the caller's to keep
            enforce_budget(cache_root(), keep=[final_path])
    return result


def _save_part(parts_dir: Path, index: int, rows: list[int], buffers: dict[str, torch.Tensor]) -> None:
    parts_dir.mkdir(parents=True, exist_ok=True)
    row_index = torch.tensor(rows, dtype=torch.long)
    tensors = {name: buf.index_select(0, row_index) for name, buf in buffers.items()}
    tensors["__rows__"] = row_index
    with atomic_path(parts_dir / f"part-{index:05d}.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={CONTENT_KEY: content_hash(tensors)})


def _load_parts(parts_dir: Path, buffers: dict[str, torch.Tensor], done: torch.Tensor) -> None:
    if not parts_dir.is_dir():
        return
    for part in sorted(parts_dir.glob("part-*.safetensors")):
        try:
            tensors, _, intact = read_safetensors(part)
        except Exception:  # a part cut short by a crash is simply recomputed
            part.unlink(missing_ok=True)
            continue
        if intact is not True:  # changed since it was written (a flipped bit): recompute it
            part.unlink(missing_ok=True)
            continue
        rows = tensors.pop("__rows__")
        if set(tensors) != set(buffers) or int(rows.max()) >= done.shape[0]:
            continue
        for name, values in tensors.items():
            buffers[name].index_copy_(0, rows, values)
        done[rows] = True
