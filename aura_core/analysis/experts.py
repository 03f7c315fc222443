"""Experts: one Find-experts result, kept on disk by its content key and restorable anywhere.

An experts record is small: the per-unit AUROC (as an intervention file), the labelled texts
it came from, and the settings that made it. Its key is the responses cache key (model
weights, data, units, pooling, token budget), so equal settings give the same key, a link
``?experts=KEY`` restores it in any session of the server, and the full responses stay in
the responses cache, loaded only when a view needs them.

>>> experts = compute_experts(loaded, sample, recipe)            # doctest: +SKIP
>>> load_experts(experts.key).intervention.auroc_max()           # doctest: +SKIP
0.907
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from aura_core.analysis.collect import MAX_TOKENS, POOLINGS, collect_responses
from aura_core.base.data import ConceptData
from aura_core.base.files import atomic_folder, atomic_write
from aura_core.base.store import mark_used
from aura_core.errors import AuraError
from aura_core.method.fit import fit_intervention
from aura_core.method.intervention import Intervention
from aura_core.method.responses import Responses, responses_cache_key
from aura_core.model.architecture import discover_units
from aura_core.model.loaded import LoadedModel
from aura_core.model.loading import cache_root, model_fingerprint
from aura_core.runtime.inline import INLINE
from aura_core.runtime.runner import Runner

__all__ = [
    "Experts",
    "ExpertsRecipe",
    "compute_experts",
    "experts_key",
    "is_experts_key",
    "load_experts",
    "load_operating_point",
    "prepared_experts",
    "register_prepared",
    "save_operating_point",
]

_KEY = re.compile(r"[0-9a-f]{20}")


N_PER_CLASS = 50
"""Texts per label for the app's experts and ``prepare``: a minute's work on 2 cores, AUROCs stable to about 0.05."""


@dataclass(frozen=True)
class ExpertsRecipe:
    """How the experts were found: everything a person chose, so a link can show it."""

    model: str
    data: str
    n_per_class: int
    seed: int = 0
    max_tokens: int = MAX_TOKENS
    pooling: str = POOLINGS[0]
    units: str | None = None


@dataclass
class Experts:
    """A Find-experts result: its key, recipe, the labelled texts and the fitted AurA intervention."""

    key: str
    recipe: ExpertsRecipe
    data: ConceptData
    intervention: Intervention

    def responses(self) -> Responses:
        """The per-text pooled responses behind the AUROC, from the responses cache."""
        path = _responses_path(self.key)
        if not path.is_file():
            raise AuraError(f"the responses behind experts {self.key} are no longer in the cache; find these experts again")
        return Responses.load(path)


def is_experts_key(text: object) -> bool:
    """Whether ``text`` has the shape of an experts key (20 hex digits): anything else is refused unread.

    >>> is_experts_key("0123456789abcdef0123"), is_experts_key("../../etc/passwd")
    (True, False)
    """
    return isinstance(text, str) and _KEY.fullmatch(text) is not None


def _root() -> Path:
    return cache_root() / "experts"


def _responses_path(key: str) -> Path:
    return cache_root() / "responses" / f"{key}.safetensors"


def experts_key(loaded: LoadedModel, sample: ConceptData, recipe: ExpertsRecipe) -> str:
    """The key these experts have (or will have): the responses cache key of the same work."""
    units = discover_units(loaded.collector, recipe.units)
    return responses_cache_key(_fingerprint(loaded), sample.content_hash(), units, recipe.pooling, recipe.max_tokens)


def _fingerprint(loaded: LoadedModel) -> str:
    cached = loaded.__dict__.get("_fingerprint")
    if cached is None:
        cached = model_fingerprint(loaded.collector)
        loaded.__dict__["_fingerprint"] = cached  # weights never change: compute the print once
    return str(cached)


def compute_experts(
    loaded: LoadedModel,
    sample: ConceptData,
    recipe: ExpertsRecipe,
    *,
    runner: Runner = INLINE,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int = 32,
) -> Experts:
    """Load the experts of ``recipe`` from disk, or collect responses (cached, resumable) and fit AurA."""
    key = experts_key(loaded, sample, recipe)
    try:
        return load_experts(key)
    except AuraError:
        pass  # not computed yet (or unreadable): compute it again
    responses = collect_responses(
        loaded.collector,
        loaded.tokenizer,
        sample,
        discover_units(loaded.collector, recipe.units),
        pooling=recipe.pooling,
        max_tokens=recipe.max_tokens,
        batch_size=batch_size,
        progress=progress,
        should_stop=should_stop,
        model_name=recipe.model,
        runner=runner,
    )
    experts = Experts(responses.meta.get("cache_key") or key, recipe, sample, fit_intervention(responses, "aura"))
    save_experts(experts)
    return experts


def save_experts(experts: Experts) -> Path:
    """Write the record under ``experts/<key>/`` (replacing nothing: a key's content never changes)."""
    folder = _root() / experts.key
    if (folder / "recipe.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_folder(folder) as staging:
            experts.intervention.save(staging / "intervention.safetensors")
            texts = {"texts": experts.data.texts, "labels": experts.data.labels, "source": experts.data.source}
            atomic_write(staging / "texts.json", json.dumps(texts))
            atomic_write(staging / "recipe.json", json.dumps(asdict(experts.recipe), indent=2))
    except AuraError:
        if not (folder / "recipe.json").is_file():  # another process wrote the same key first: theirs is ours
            raise
    return folder


def load_experts(key: str) -> Experts:
    """The experts stored under ``key``; a clear error when the key is malformed or unknown."""
    if not is_experts_key(key):
        raise AuraError(f"{str(key)[:40]!r} is not an experts key (20 hex digits, as in a shared link)")
    folder = _root() / key
    if not (folder / "recipe.json").is_file():
        raise AuraError(f"no experts {key} on this server: they were found on another server, or removed")
    mark_used(folder)  # a link still opens these: the store evicts them last
    try:
        recipe = ExpertsRecipe(**json.loads((folder / "recipe.json").read_text()))
        stored = json.loads((folder / "texts.json").read_text())
        data = ConceptData(list(stored["texts"]), [int(v) for v in stored["labels"]], str(stored["source"]))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise AuraError(f"experts {key}: the stored record is unreadable ({err}); find these experts again") from err
    intervention = Intervention.load(folder / "intervention.safetensors")
    if not intervention.stats and _responses_path(key).is_file():
        # Found before the fit stored τ and the transport sums beside the AUROC: fit again from the same responses, once.
        intervention = fit_intervention(Responses.load(_responses_path(key)), "aura")
        intervention.save(folder / "intervention.safetensors")
    return Experts(key, recipe, data, intervention)


def attachment_path(key: str, name: str) -> Path | None:
    """Where a small result measured for experts ``key`` lives beside them (None for a malformed key)."""
    return _root() / key / name if is_experts_key(key) else None


def save_attachment(key: str, name: str, value: dict[str, Any]) -> None:
    """Keep a small JSON result (an operating point, the demo's choice) beside the experts it was measured for."""
    path = attachment_path(key, name)
    if path is None or not path.parent.is_dir():
        raise AuraError(f"no experts {key} to attach {name} to")
    atomic_write(path, json.dumps(value, default=str))


def save_operating_point(key: str, point: dict[str, object]) -> None:
    """Keep the best sweep point within a perplexity budget beside the experts it was measured for."""
    save_attachment(key, "operating_point.json", point)


def load_attachment(key: str, name: str) -> dict[str, Any] | None:
    """A small JSON result kept beside experts ``key``, or None (absent or unreadable)."""
    path = attachment_path(key, name)
    if path is None or not path.is_file():
        return None
    try:
        value: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value


def load_operating_point(key: str) -> dict[str, Any] | None:
    """The operating point measured for these experts, if any."""
    return load_attachment(key, "operating_point.json")


def _prepared_path() -> Path:
    return _root() / "prepared.json"


def prepared_experts() -> dict[str, dict[str, str]]:
    """Prepared experts by model: ``{model: {name: key}}``; ``default`` is what the app opens on."""
    path = _prepared_path()
    if not path.is_file():
        return {}
    try:
        table: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {
        str(model): {str(name): str(key) for name, key in names.items() if is_experts_key(key)}
        for model, names in table.items()
        if isinstance(names, dict)
    }


def register_prepared(model: str, key: str, name: str = "default") -> None:
    """Name experts ``name`` for ``model`` (``default`` opens first in the app)."""
    if not is_experts_key(key) or not (_root() / key / "recipe.json").is_file():
        raise AuraError(f"no experts {key} to register")
    path = _prepared_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A file lock around the read-modify-write: two processes registering at once both land.
    with FileLock(str(path.with_name(path.name + ".lock")), timeout=60):
        table = prepared_experts()
        table.setdefault(model, {})[name] = key
        atomic_write(path, json.dumps(table, indent=2))
