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
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from aura_core.auroc import auroc
from aura_core.errors import InterventionError
from aura_core.hooks import exclusive, rewrap_output, unwrap_output
from aura_core.models import layer_of, model_fingerprint, module_kind, unit_width
from aura_core.responses import Responses

__all__ = [
    "METHODS",
    "Intervention",
    "apply_hooks",
    "export_model",
    "fit_intervention",
    "fold_into_weights",
    "intervened",
    "unit_table",
]

METHODS = ("aura", "det0", "damp")


@dataclass
class Intervention:
    """Per-unit AUROC per module, a method and its settings.

    ``strength`` λ blends the identity (0) and the full method (1): factor = 1 − λ + λ·α.
    Det0 and Damp act on the ``k`` units of highest AUROC across the whole model.
    """

    auroc: dict[str, torch.Tensor]
    method: str = "aura"
    strength: float = 1.0
    k: int | None = None
    damp_alpha: float = 0.5
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InterventionError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise InterventionError(f"strength must be within [0, 1], not {self.strength}")
        if self.method != "aura":
            if self.k is None or int(self.k) < 1:
                raise InterventionError(f"{self.method} needs k ≥ 1 (how many top units to act on)")
            if self.k > self.n_units:
                raise InterventionError(f"k = {self.k} is more than the {self.n_units} units available")
        if self.method == "damp" and not 0.0 <= float(self.damp_alpha) <= 1.0:
            raise InterventionError(f"damp alpha must be within [0, 1], not {self.damp_alpha}")

    @property
    def n_units(self) -> int:
        return sum(int(t.numel()) for t in self.auroc.values())

    def auroc_max(self) -> float:
        return max(float(t.max()) for t in self.auroc.values())

    def with_strength(self, strength: float) -> Intervention:
        return replace(self, strength=float(strength))

    def alphas(self) -> dict[str, torch.Tensor]:
        """α per unit at full strength: AurA 1 − 2·(AUROC − 0.5) above 0.5, else 1."""
        if self.method == "aura":
            return {
                name: torch.where(a > 0.5, 1.0 - 2.0 * (a - 0.5), torch.ones_like(a)).to(torch.float32)
                for name, a in self.auroc.items()
            }
        names = list(self.auroc)
        flat = torch.cat([self.auroc[name].to(torch.float64).reshape(-1) for name in names])
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[torch.topk(flat, int(self.k)).indices] = True
        value = 0.0 if self.method == "det0" else float(self.damp_alpha)
        factors = torch.where(chosen, torch.full_like(flat, value), torch.ones_like(flat)).to(torch.float32)
        result, start = {}, 0
        for name in names:
            width = self.auroc[name].numel()
            result[name] = factors[start : start + width]
            start += width
        return result

    def factors(self) -> dict[str, torch.Tensor]:
        """What each unit's output is multiplied by: 1 − λ + λ·α."""
        lam = float(self.strength)
        return {name: (1.0 - lam) + lam * alpha for name, alpha in self.alphas().items()}

    def key(self) -> str:
        """A hash of the settings and every AUROC: equal keys, equal factors."""
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode())
        for name, values in self.auroc.items():
            digest.update(name.encode())
            digest.update(values.detach().to(torch.float64).cpu().numpy().tobytes())
        return digest.hexdigest()[:20]

    def settings(self) -> dict:
        return {"method": self.method, "strength": self.strength, "k": self.k, "damp_alpha": self.damp_alpha}

    def to_bytes(self) -> bytes:
        """Per-unit AUROC (float64) in safetensors, settings and provenance in its JSON header."""
        header = {"settings": self.settings(), "meta": self.meta, "units": list(self.auroc)}
        tensors = {name: t.to(torch.float64).contiguous() for name, t in self.auroc.items()}
        return save_bytes(tensors, metadata={"aura_intervention": json.dumps(header, default=str)})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, **overrides: object) -> Intervention:
        """Read a saved intervention; keyword ``overrides`` replace stored settings (e.g. ``strength``)."""
        path = Path(path)
        if not path.is_file():
            raise InterventionError(f"{path}: no such intervention file")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads((handle.metadata() or {}).get("aura_intervention", "null"))
            tensors = load_file(str(path))
        except Exception as err:  # corrupt or foreign files raise safetensors' own errors
            raise InterventionError(f"{path}: not a readable intervention file ({err})") from None
        if not isinstance(header, dict) or "settings" not in header:
            raise InterventionError(f"{path}: a safetensors file, but not an AurA intervention")
        settings = {**header["settings"], **{k: v for k, v in overrides.items() if v is not None}}
        order = header.get("units") or list(tensors)
        return cls({name: tensors[name] for name in order}, meta=header.get("meta", {}), **settings)

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
    meta = {
        key: responses.meta.get(key)
        for key in ("model", "fingerprint", "data_source", "data_hash", "n_texts", "pooling", "max_tokens")
    }
    return Intervention(scores, method=method, meta=meta, **settings)


def _active(intervention: Intervention, modules: dict[str, nn.Module]) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Modules with at least one factor other than 1, with their factors on the module's device."""
    active = {}
    for name, factor in intervention.factors().items():
        if bool((factor != 1.0).any()):
            weight = modules[name].weight
            active[name] = (modules[name], factor.to(weight.device))
    return active


@contextmanager
def apply_hooks(model: nn.Module, intervention: Intervention) -> Iterator[nn.Module]:
    """Scale unit outputs with forward hooks inside the block; removed on exit, even on error."""
    with exclusive(model):
        active = _active(intervention, intervention.check_fits(model))
        handles = []
        try:
            for module, factor in active.values():
                handles.append(module.register_forward_hook(_scaling_hook(factor)))
            yield model
        finally:
            for handle in handles:
                handle.remove()


def _scaling_hook(factor: torch.Tensor) -> Callable[[nn.Module, object, object], object]:
    def hook(module: nn.Module, inputs: object, output: object) -> object:
        hidden = unwrap_output(output)
        return rewrap_output(output, hidden * factor.to(hidden.dtype))

    return hook


def _unit_axis(module: nn.Module) -> int:
    # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
    return 0 if isinstance(module, nn.Linear) or not hasattr(module, "nf") else 1


# Folded weights are kept for the last intervention of each model, so serving the same one
# again swaps tensors (O(1)) instead of rescaling rows; above this size rows are rescaled in place.
FOLD_CACHE_BYTES = int(os.environ.get("AURA_FOLD_CACHE_MB", "2048")) * 2**20
_FOLDED: weakref.WeakKeyDictionary[nn.Module, tuple[str, list[tuple[nn.Parameter, torch.Tensor]]]] = weakref.WeakKeyDictionary()


def _fold_plan(model: nn.Module, intervention: Intervention) -> list[tuple[nn.Parameter, int, torch.Tensor, torch.Tensor]]:
    """(parameter, unit axis, unit indices, factors) for every weight and bias the intervention scales."""
    plan = []
    for module, factor in _active(intervention, intervention.check_fits(model)).values():
        index = torch.nonzero(factor != 1.0).squeeze(1)
        scale = factor[index].to(module.weight.dtype)
        for param, axis in ((module.weight, _unit_axis(module)), (getattr(module, "bias", None), 0)):
            if param is None:
                continue
            if param.device.type == "meta":
                raise InterventionError("folding needs the weights in memory (this model is offloaded): use mode 'hooks'")
            plan.append((param, axis, index, scale))
    return plan


def _scaled(values: torch.Tensor, axis: int, scale: torch.Tensor) -> torch.Tensor:
    shape = [1] * values.ndim
    shape[axis] = -1
    return values * scale.view(shape)


@contextmanager
def fold_into_weights(model: nn.Module, intervention: Intervention) -> Iterator[nn.Module]:
    """Scale the weight rows and bias of each unit inside the block, exactly restored on exit.

    Output of a linear layer is linear in its weight row and bias, so this gives the same
    logits as the hooks at no runtime cost. The original tensors are never changed: folded
    copies are swapped in and out (kept for the next use of the same intervention), or, for
    models too large to copy, only the touched rows are saved and rescaled in place.
    """
    with exclusive(model), torch.no_grad():
        plan = _fold_plan(model, intervention)
        size = sum(param.numel() * param.element_size() for param, *_ in plan)
        if size <= FOLD_CACHE_BYTES:
            key = intervention.key()
            cached = _FOLDED.get(model)
            if cached is None or cached[0] != key:
                _FOLDED.pop(model, None)  # free the previous copies before making new ones
                folded = []
                for param, axis, index, scale in plan:
                    copy = param.detach().clone()
                    copy.index_copy_(axis, index, _scaled(copy.index_select(axis, index), axis, scale))
                    folded.append((param, copy))
                cached = _FOLDED[model] = (key, folded)
            originals: list[tuple[nn.Parameter, torch.Tensor]] = []
            try:
                for param, copy in cached[1]:
                    originals.append((param, param.data))
                    param.data = copy
                yield model
            finally:
                for param, original in reversed(originals):
                    param.data = original
            return
        saved: list[tuple[nn.Parameter, int, torch.Tensor, torch.Tensor]] = []
        try:
            for param, axis, index, scale in plan:
                rows = param.index_select(axis, index)
                saved.append((param, axis, index, rows))
                param.index_copy_(axis, index, _scaled(rows, axis, scale))
            yield model
        finally:
            for param, axis, index, original in reversed(saved):
                param.index_copy_(axis, index, original)


@contextmanager
def intervened(model: nn.Module, intervention: Intervention | None, mode: str = "fold") -> Iterator[nn.Module]:
    """The model with ``intervention`` applied (``fold`` or ``hooks``), or plain when it is None.

    Either way the block holds the model's lock, so a shared model is never seen half-changed.
    """
    if mode not in ("fold", "hooks"):
        raise InterventionError(f"mode must be 'fold' or 'hooks', not {mode!r}")
    if intervention is None or float(intervention.strength) == 0.0:
        with exclusive(model):
            yield model
        return
    scope = fold_into_weights if mode == "fold" else apply_hooks
    with scope(model, intervention):
        yield model


def export_model(model: nn.Module, tokenizer: object, intervention: Intervention, out_dir: str | Path) -> Path:
    """Save the intervened model as an ordinary checkpoint folder that plain ``transformers`` loads."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InterventionError(f"{out_dir}: folder exists and is not empty; choose a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        with fold_into_weights(model, intervention):
            model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        card = {"aura_intervention": intervention.settings(), "fitted_on": intervention.meta}
        (staging / "aura_intervention.json").write_text(json.dumps(card, indent=2, default=str))
        staging.chmod(0o755)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


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
