"""AurA, Det0 and Damp: per-unit factors from AUROC, applied by hooks or folded into weights.

The file stores the statistic (per-unit AUROC) and the settings; factors are derived on load.

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
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from aura_core.architecture import layer_of, module_kind, unit_axis, unit_width, weight_of
from aura_core.auroc import auroc
from aura_core.batching import Tokenizer
from aura_core.errors import InterventionError
from aura_core.files import CONTENT_KEY, atomic_folder, atomic_write, content_hash
from aura_core.hooks import CallPlan, call_plan
from aura_core.methods import METHODS, AlphaInputs, method_label
from aura_core.models import model_fingerprint
from aura_core.responses import Responses

__all__ = [
    "Intervention",
    "export_model",
    "fit_intervention",
    "fold_into_weights",
    "folded_state_dict",
    "intervened",
    "row_plan",
    "rows_intervened",
    "unit_table",
]


@dataclass(frozen=True, eq=False)
class Intervention:
    """Per-unit AUROC per module, a method (see :data:`aura_core.methods.METHODS`) and its settings.

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

    def __post_init__(self) -> None:
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

    def alphas(self) -> dict[str, torch.Tensor]:
        """α per unit at full strength, by the method's rule."""
        counts = self.meta.get("n_per_label")
        n_per_label = (int(counts[0]), int(counts[1])) if isinstance(counts, list | tuple) and len(counts) == 2 else None
        return METHODS[self.method].alphas(AlphaInputs(self.auroc, self.k, float(self.damp_alpha), n_per_label))

    def factors(self) -> dict[str, torch.Tensor]:
        """What each unit's output is multiplied by: 1 − λ + λ·α (computed once per object)."""
        cached = self.__dict__.get("_factors")
        if cached is None:
            lam = float(self.strength)
            cached = {name: (1.0 - lam) + lam * alpha for name, alpha in self.alphas().items()}
            object.__setattr__(self, "_factors", cached)  # a cache on a frozen value: the settings never change
        return cached

    def key(self) -> str:
        """A hash of the settings and every AUROC: equal keys, equal factors."""
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode())
        for name, values in self.auroc.items():
            digest.update(name.encode())
            digest.update(values.detach().to(torch.float64).cpu().numpy().tobytes())
        return digest.hexdigest()[:20]

    def settings(self) -> dict[str, object]:
        return {"method": self.method, "strength": self.strength, "k": self.k, "damp_alpha": self.damp_alpha}

    def to_bytes(self) -> bytes:
        """Per-unit AUROC (float64) in safetensors, settings and provenance in its JSON header."""
        header = {"settings": self.settings(), "meta": self.meta, "units": list(self.auroc)}
        tensors = {name: t.to(torch.float64).contiguous() for name, t in self.auroc.items()}
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
            with safe_open(str(path), framework="pt") as handle:
                stored = handle.metadata() or {}
            raw_header = stored.get("aura_intervention", "null")
            tensors = load_file(str(path))
        except Exception as err:  # corrupt or foreign files raise safetensors' own errors
            raise InterventionError(f"{path}: not a readable intervention file ({err})") from None
        hint = "; fit the intervention again"
        if CONTENT_KEY in stored and stored[CONTENT_KEY] != content_hash(tensors):
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
        return cls({name: tensors[name] for name in order}, meta=meta, **settings)

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


def fit_intervention(
    responses: Responses, method: str = "aura", *, device: str | None = None, **settings: object
) -> Intervention:
    """AUROC of every unit in ``responses`` against its labels, wrapped as an intervention.

    ``device="cuda"`` ranks on the GPU; by default on the GPU when there is one, else on the
    CPU's SIMD sort.

    >>> iv = fit_intervention(responses, "det0", k=20)          # doctest: +SKIP
    """
    target = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scores = {name: auroc(values.to(target), responses.labels).cpu() for name, values in responses.per_module.items()}
    meta: dict[str, object] = {
        key: responses.meta.get(key)
        for key in ("model", "fingerprint", "data_source", "data_hash", "n_texts", "pooling", "max_tokens")
    }
    meta["n_per_label"] = [int((responses.labels == 0).sum()), int((responses.labels == 1).sum())]
    return Intervention(scores, method=method, meta=meta, **settings)  # type: ignore[arg-type]


def _active(intervention: Intervention, modules: dict[str, nn.Module]) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Modules with at least one factor other than 1, with their factors on the module's device."""
    active = {}
    for name, factor in intervention.factors().items():
        if bool((factor != 1.0).any()):
            active[name] = (modules[name], factor.to(weight_of(modules[name]).device))
    return active


def _is_identity(intervention: Intervention | None) -> bool:
    return intervention is None or float(intervention.strength) == 0.0


def row_plan(model: nn.Module, interventions: Sequence[Intervention | None]) -> CallPlan | None:
    """The call plan for a batch whose row ``i`` follows ``interventions[i]`` (None: untouched).

    One intervention for every row gives factors of shape ``(units,)``; mixed rows give
    ``(rows, units)``, with a row of ones for every untouched row. None when no row changes.

    >>> from aura_core.tiny import load_tiny
    >>> model = load_tiny("tiny-gpt2").model
    >>> iv = Intervention({"transformer.h.0.mlp.c_fc": torch.full((64,), 0.75)})
    >>> row_plan(model, [None, iv]).scale["transformer.h.0.mlp.c_fc"][:, 0].tolist()
    [1.0, 0.5]
    """
    distinct: dict[int, Intervention] = {}
    for iv in interventions:
        if not _is_identity(iv):
            assert iv is not None
            distinct.setdefault(id(iv), iv)
    if not distinct:
        return None
    device = next(model.parameters()).device
    active = {key: _active(iv, iv.check_fits(model)) for key, iv in distinct.items()}
    names = sorted({name for per_module in active.values() for name in per_module})
    if len(distinct) == 1 and all(not _is_identity(iv) for iv in interventions):
        (only,) = active.values()
        return CallPlan(scale={name: factor.to(device) for name, (_, factor) in only.items()})
    modules = dict(model.named_modules())
    scale = {}
    for name in names:
        rows = torch.ones((len(interventions), unit_width(modules[name])), device=device)
        for row, iv in enumerate(interventions):
            if not _is_identity(iv) and name in active[id(iv)]:
                rows[row] = active[id(iv)][name][1]
        scale[name] = rows
    return CallPlan(scale=scale)


@contextmanager
def intervened(model: nn.Module, intervention: Intervention | None) -> Iterator[nn.Module]:
    """Forward calls of ``model`` made inside the block (by this thread) follow ``intervention``.

    The scope belongs to the call, not the model: nothing about the model changes, so other
    sessions using the same model at the same time see the plain model. None, or strength
    0, leaves every call untouched.

    >>> with intervened(model, aura):                       # doctest: +SKIP
    ...     logits = model(input_ids).logits
    """
    with call_plan(model, row_plan(model, [intervention])):
        yield model


@contextmanager
def rows_intervened(model: nn.Module, interventions: Sequence[Intervention | None]) -> Iterator[nn.Module]:
    """Like :func:`intervened`, with one intervention per batch row (None: that row is plain).

    >>> with rows_intervened(model, [None, aura.with_strength(0.6)]):   # doctest: +SKIP
    ...     logits = model(two_rows).logits   # row 0 baseline, row 1 AurA at λ = 0.6
    """
    with call_plan(model, row_plan(model, interventions)):
        yield model


def _fold_plan(model: nn.Module, intervention: Intervention) -> list[tuple[str, nn.Parameter, int, torch.Tensor, torch.Tensor]]:
    """(name, parameter, unit axis, unit indices, factors) for every weight and bias the intervention scales."""
    plan = []
    params = dict(model.named_parameters())
    for name, (module, factor) in _active(intervention, intervention.check_fits(model)).items():
        index = torch.nonzero(factor != 1.0).squeeze(1)
        scale = factor[index].to(weight_of(module).dtype)
        for kind, axis in (("weight", unit_axis(module)), ("bias", 0)):
            param = params.get(f"{name}.{kind}")
            if param is None:
                continue
            if param.device.type == "meta":
                raise InterventionError("folding needs the weights in memory (this model is offloaded)")
            plan.append((f"{name}.{kind}", param, axis, index, scale))
    return plan


def _scaled(values: torch.Tensor, axis: int, scale: torch.Tensor) -> torch.Tensor:
    shape = [1] * values.ndim
    shape[axis] = -1
    return values * scale.view(shape)


def folded_state_dict(model: nn.Module, intervention: Intervention) -> dict[str, torch.Tensor]:
    """The model's state dict with the intervention folded into new copies of the touched tensors.

    The model itself is never changed, so this is safe on a model that serves other calls.
    """
    state = dict(model.state_dict())
    with torch.no_grad():
        for name, param, axis, index, scale in _fold_plan(model, intervention):
            copy = param.detach().clone()
            copy.index_copy_(axis, index, _scaled(copy.index_select(axis, index), axis, scale))
            state[name] = copy
    return state


_FOLDING: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_FOLDING_GUARD = threading.Lock()


@contextmanager
def fold_into_weights(model: nn.Module, intervention: Intervention) -> Iterator[nn.Module]:
    """Scale the weight rows and bias of each unit in place inside the block, exactly restored on exit.

    Output of a linear layer is linear in its weight row and bias, so this gives the same
    logits as the call plans at no runtime cost, but it changes the model itself: use it only
    on a model no other call is using (an export, a benchmark). Nested folds are an error.
    """
    with _FOLDING_GUARD:
        if model in _FOLDING:
            raise InterventionError("this model already has an intervention folded in: leave that block first")
        _FOLDING.add(model)
    saved: list[tuple[nn.Parameter, int, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for _, param, axis, index, scale in _fold_plan(model, intervention):
                rows = param.index_select(axis, index)
                saved.append((param, axis, index, rows))
                param.index_copy_(axis, index, _scaled(rows, axis, scale))
        yield model
    finally:
        with torch.no_grad():
            for param, axis, index, original in reversed(saved):
                param.index_copy_(axis, index, original)
        with _FOLDING_GUARD:
            _FOLDING.discard(model)


def export_model(model: nn.Module, tokenizer: Tokenizer, intervention: Intervention, out_dir: str | Path) -> Path:
    """Save the intervened model as an ordinary checkpoint folder that plain ``transformers`` loads.

    The folded weights are new tensors: the model keeps serving other calls unchanged.
    """
    with atomic_folder(out_dir) as staging:
        model.save_pretrained(staging, state_dict=folded_state_dict(model, intervention))  # type: ignore[operator]
        tokenizer.save_pretrained(staging)
        card = {"aura_intervention": intervention.settings(), "fitted_on": intervention.meta}
        atomic_write(staging / "aura_intervention.json", json.dumps(card, indent=2, default=str))
    return Path(out_dir)


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
