"""The Intervention value: per-unit AUROC and the settings that turn it into factors, and its file.

AurA, Det0 and Damp derive their factors from it (:mod:`aura_core.method.registry`); call
plans apply them (:mod:`aura_core.runtime.plans`) and folding writes them into weights
(:mod:`aura_core.runtime.folding`). The file stores the statistic (per-unit AUROC) and the settings; factors are derived on load.

>>> import torch
>>> iv = Intervention({"m": torch.tensor([0.5, 0.75, 1.0, 0.2])})
>>> iv.alphas()["m"].tolist()
[1.0, 0.5, 0.0, 1.0]
>>> iv.with_strength(0.5).factors()["m"].tolist()
[1.0, 0.75, 0.5, 1.0]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save as save_bytes
from torch import nn

from aura_core.base.files import CONTENT_KEY, atomic_write, content_hash, read_safetensors
from aura_core.base.numbers import check_finite
from aura_core.errors import InterventionError
from aura_core.method.registry import METHODS, AlphaInputs, UnitEdit, method_label
from aura_core.model.architecture import layer_of, module_kind, unit_width
from aura_core.model.loading import model_fingerprint

__all__ = ["Intervention", "unit_table"]


@dataclass(frozen=True, eq=False)
class Intervention:
    """Per-unit AUROC per module, a method (see :data:`aura_core.method.registry.METHODS`) and its settings.

    ``strength`` λ blends the identity (0) and the full method (1): factor = 1 − λ + λ·α.
    Det0 and Damp act on the ``k`` units of highest AUROC across the whole model. Frozen:
    :meth:`with_settings` gives a changed copy, so one fitted intervention serves every
    method and strength a page or an evaluation asks for.
    """

    auroc: dict[str, torch.Tensor]
    method: str = "aura"
    strength: float = 1.0
    k: int | None = None
    damp_alpha: float = 0.5
    meta: dict[str, object] = field(default_factory=dict)
    # Per-unit statistics beside the AUROC that some methods need (registry.TAU, registry.TRANSPORT):
    # kind → module → values, one row (or one row of sums) per unit.
    stats: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self, ("strength", "damp_alpha"), InterventionError)
        method = METHODS.get(self.method)
        if method is None:
            raise InterventionError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise InterventionError(f"strength must be within [0, 1], not {self.strength}")
        if method.uses_k:
            if self.k is None or int(self.k) < 1:
                raise InterventionError(f"{self.method} needs k ≥ 1 (how many top units to act on)")
            if self.k > self.n_units:
                raise InterventionError(f"k = {self.k} is more than the {self.n_units} units available")
        if method.uses_damp_alpha and not 0.0 <= float(self.damp_alpha) <= 1.0:
            raise InterventionError(f"damp alpha must be within [0, 1], not {self.damp_alpha}")
        for kind in method.needs:
            self._inputs().stat(kind, method.label)  # refused now, not at the first forward pass

    @property
    def n_units(self) -> int:
        return sum(int(t.numel()) for t in self.auroc.values())

    @property
    def label(self) -> str:
        """``AurA · λ = 0.60``: the method's name and strength, as people see them."""
        return f"{method_label(self.method)} · λ = {self.strength:.2f}"

    def auroc_max(self) -> float:
        return max(float(t.max()) for t in self.auroc.values())

    def with_settings(
        self,
        *,
        method: str | None = None,
        strength: float | None = None,
        k: int | None = None,
        damp_alpha: float | None = None,
    ) -> Intervention:
        """The same AUROC with other settings; settings left as None keep their value.

        >>> iv = Intervention({"m": torch.tensor([0.9, 0.2])})
        >>> iv.with_settings(method="det0", k=1).alphas()["m"].tolist()
        [0.0, 1.0]
        """
        changes: dict[str, object] = {"method": method, "strength": strength, "k": k, "damp_alpha": damp_alpha}
        return replace(self, **{name: value for name, value in changes.items() if value is not None})  # type: ignore[arg-type]

    def with_strength(self, strength: float) -> Intervention:
        return self.with_settings(strength=float(strength))

    def restricted(self, modules: Collection[str]) -> Intervention:
        """The same intervention on ``modules`` only, in its own order; every other module keeps its output.

        A unit family's share of a fitted intervention (see :func:`aura_core.model.architecture.discover_units`).

        >>> iv = Intervention({"a": torch.tensor([0.9]), "b": torch.tensor([1.0])})
        >>> iv.restricted(["b"]).factors()
        {'b': tensor([0.])}
        """
        wanted = set(modules)
        kept = {name: values for name, values in self.auroc.items() if name in wanted}
        if not kept:
            example = f" (such as {min(wanted)!r})" if wanted else ""
            raise InterventionError(f"the intervention acts on none of the {len(wanted)} modules asked for{example}")
        stats = {kind: {name: v for name, v in per.items() if name in kept} for kind, per in self.stats.items()}
        return replace(self, auroc=kept, meta=dict(self.meta), stats=stats)

    def _inputs(self) -> AlphaInputs:
        counts = self.meta.get("n_per_label")
        n_per_label = (int(counts[0]), int(counts[1])) if isinstance(counts, list | tuple) and len(counts) == 2 else None
        return AlphaInputs(self.auroc, self.k, float(self.damp_alpha), n_per_label, self.stats)

    def alphas(self) -> dict[str, torch.Tensor]:
        """α per unit at full strength, by the method's rule."""
        return METHODS[self.method].alphas(self._inputs())

    def edits(self) -> dict[str, UnitEdit]:
        """Each module's edit at this strength: scale, and the shift and gate where the method has them (cached).

        >>> iv = Intervention({"m": torch.tensor([0.75])}, "aura-cond", stats={"tau": {"m": torch.tensor([2.0])}})
        >>> edit = iv.with_strength(0.5).edits()["m"]
        >>> edit.scale.tolist(), edit.low.tolist(), edit.shift
        ([0.75], [2.0], None)
        """
        cached = self.__dict__.get("_edits")
        if cached is None:
            cached = METHODS[self.method].edits_at(self._inputs(), float(self.strength))
            object.__setattr__(self, "_edits", cached)  # a cache on a frozen value: the settings never change
        return cached

    def factors(self) -> dict[str, torch.Tensor]:
        """What each unit's output is multiplied by: 1 − λ + λ·α (computed once per object)."""
        cached = self.__dict__.get("_factors")
        if cached is None:
            lam = float(self.strength)
            cached = {name: (1.0 - lam) + lam * alpha for name, alpha in self.alphas().items()}
            object.__setattr__(self, "_factors", cached)  # a cache on a frozen value: the settings never change
        return cached

    def key(self) -> str:
        """A hash of the settings, every AUROC and every statistic: equal keys, equal edits."""
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode())
        # Sorted: a file stores its tensors by name, so a loaded copy holds them in another order than the fit.
        for name, values in sorted(self._tensors().items()):
            digest.update(name.encode())
            digest.update(values.detach().to(torch.float64).cpu().numpy().tobytes())
        return digest.hexdigest()[:20]

    def _tensors(self) -> dict[str, torch.Tensor]:
        """AUROC under the module's name, each statistic under ``kind:module`` (names never hold a colon)."""
        tensors = dict(self.auroc)
        for kind, per_module in self.stats.items():
            tensors.update({f"{kind}{_STAT_SEP}{name}": values for name, values in per_module.items()})
        return tensors

    def settings(self) -> dict[str, object]:
        return {"method": self.method, "strength": self.strength, "k": self.k, "damp_alpha": self.damp_alpha}

    def to_bytes(self) -> bytes:
        """Per-unit AUROC (float64) in safetensors, settings and provenance in its JSON header."""
        header = {"settings": self.settings(), "meta": self.meta, "units": list(self.auroc), "stats": list(self.stats)}
        tensors = {name: t.to(torch.float64).contiguous() for name, t in self._tensors().items()}
        metadata = {"aura_intervention": json.dumps(header, default=str), CONTENT_KEY: content_hash(tensors)}
        return save_bytes(tensors, metadata=metadata)

    def save(self, path: str | Path) -> Path:
        return atomic_write(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path, **overrides: object) -> Intervention:
        """Read a saved intervention; keyword ``overrides`` replace stored settings (e.g. ``strength``).

        Anything but a file written by :meth:`save` (settings of the right types, one row of
        AUROC in [0, 1] per module) raises :class:`InterventionError` saying what is wrong.

        >>> Intervention.load("runs/aura.safetensors", strength=0.5).strength   # doctest: +SKIP
        0.5
        """
        path = Path(path)
        if not path.is_file():
            raise InterventionError(f"{path}: no such intervention file")
        try:
            tensors, stored, intact = read_safetensors(path)
        except Exception as err:  # corrupt or foreign files raise safetensors' own errors
            raise InterventionError(f"{path}: not a readable intervention file ({err})") from None
        raw_header = stored.get("aura_intervention", "null")
        hint = "; fit the intervention again"
        if intact is False:
            raise InterventionError(f"{path}: its content changed after it was written (the hash in its header differs){hint}")
        try:
            header = json.loads(raw_header)
        except (json.JSONDecodeError, RecursionError):
            header = None
        if not isinstance(header, dict) or not isinstance(header.get("settings"), dict):
            raise InterventionError(f"{path}: a safetensors file, but not an AurA intervention")
        settings = {**header["settings"], **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(settings) - {"method", "strength", "k", "damp_alpha"})
        if unknown:
            raise InterventionError(f"{path}: unknown settings {', '.join(map(repr, unknown))}{hint}")
        if "method" in settings and not isinstance(settings["method"], str):
            raise InterventionError(f"{path}: method {settings['method']!r} is not a name{hint}")
        for key in ("strength", "damp_alpha"):
            value = settings.get(key)
            if key in settings and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InterventionError(f"{path}: {key} {value!r} is not a number{hint}")
            if key in settings:
                try:
                    settings[key] = float(value)  # type: ignore[arg-type]  # checked to be a number above
                except OverflowError:
                    raise InterventionError(f"{path}: {key} {value!r} is out of range{hint}") from None
        k = settings.get("k")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
            raise InterventionError(f"{path}: k {k!r} is not a whole number{hint}")
        meta = header.get("meta", {})
        if not isinstance(meta, dict):
            raise InterventionError(f"{path}: its 'meta' is not a JSON object{hint}")
        stats = _split_stats(path, header.get("stats", []), tensors, hint)
        order = header.get("units", list(tensors))
        if not isinstance(order, list) or not all(isinstance(name, str) for name in order) or len(set(order)) != len(order):
            raise InterventionError(f"{path}: 'units' must list module names, each once{hint}")
        if set(order) != set(tensors):
            odd = sorted(set(order) ^ set(tensors))[:3]
            raise InterventionError(f"{path}: the modules listed in its header and those stored differ ({', '.join(odd)}){hint}")
        if not order:
            raise InterventionError(f"{path}: holds no modules{hint}")
        for name in order:
            values = tensors[name]
            floats = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
            if values.ndim != 1 or values.numel() == 0 or values.dtype not in floats:
                raise InterventionError(
                    f"{path}: module {name!r} holds {values.dtype} of shape {tuple(values.shape)}, not one row of AUROC{hint}"
                )
            if not bool(((values >= 0) & (values <= 1)).all()):
                raise InterventionError(f"{path}: module {name!r} has AUROC outside [0, 1] (or NaN){hint}")
        for kind, per_module in stats.items():
            if set(per_module) != set(order) or any(per_module[n].shape[0] != tensors[n].numel() for n in order):
                raise InterventionError(f"{path}: its {kind!r} statistics do not match its modules{hint}")
        return cls({name: tensors[name] for name in order}, meta=meta, stats=stats, **settings)

    def fitted_on(self, model: nn.Module) -> bool:
        """Whether the AUROC was computed on this very model (same weights), when that is known."""
        fitted = self.meta.get("fingerprint")
        return not fitted or fitted == model_fingerprint(model)

    def check_fits(self, model: nn.Module) -> dict[str, nn.Module]:
        """The modules this intervention acts on; an error if any is missing or of another width."""
        modules = dict(model.named_modules())
        for name, values in self.auroc.items():
            if name not in modules:
                raise InterventionError(f"module {name!r} of the intervention is not in this model")
            if unit_width(modules[name]) != values.numel():
                raise InterventionError(
                    f"module {name!r} has {unit_width(modules[name])} units, the intervention {values.numel()}"
                )
        return {name: modules[name] for name in self.auroc}


_STAT_SEP = ":"


def _split_stats(path: Path, kinds: object, tensors: dict[str, torch.Tensor], hint: str) -> dict[str, dict[str, torch.Tensor]]:
    """Take the statistics (stored as ``kind:module``) out of ``tensors``; an error if they do not read right."""
    if not isinstance(kinds, list) or not all(isinstance(kind, str) and kind for kind in kinds):
        raise InterventionError(f"{path}: 'stats' must list the names of its statistics{hint}")
    stats: dict[str, dict[str, torch.Tensor]] = {kind: {} for kind in kinds}
    # Only a listed kind makes a key a statistic: a module's own name may hold the separator too.
    for key in [key for key in tensors if key.partition(_STAT_SEP)[0] in stats and _STAT_SEP in key]:
        kind, _, name = key.partition(_STAT_SEP)
        values = tensors.pop(key)
        if values.ndim not in (1, 2) or not values.is_floating_point() or not bool(values.isfinite().all()):
            raise InterventionError(f"{path}: statistic {key!r} is not a finite row per unit{hint}")
        stats[kind][name] = values
    return stats


def unit_table(intervention: Intervention) -> pd.DataFrame:
    """One row per unit: module, layer, kind, index, AUROC, α, factor; highest AUROC first.

    >>> unit_table(Intervention({"h.0.mlp.c_fc": torch.tensor([0.9, 0.4])})).unit.tolist()
    [0, 1]
    """
    alphas = intervention.alphas()
    factors = intervention.factors()
    frames = []
    for name, values in intervention.auroc.items():
        n = values.numel()
        frames.append(
            pd.DataFrame(
                {
                    "module": name,
                    "layer": layer_of(name),
                    "kind": module_kind(name),
                    "unit": range(n),
                    "auroc": values.to(torch.float64).numpy(),
                    "alpha": alphas[name].numpy(),
                    "factor": factors[name].numpy(),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["auroc", "layer", "unit"], ascending=[False, True, True], ignore_index=True)
