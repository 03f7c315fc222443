"""A runner that decodes on vLLM, in vLLM's own environment; every other piece of work runs inline.

vLLM pins other versions of transformers than this project, so it lives in a second virtual
environment (``bash scripts/setup.sh --vllm`` makes ``.venv-vllm``) and runs as a subprocess
(:mod:`aura_core.runtime.vllm_worker`) that this module talks to in JSON lines. A folded
intervention is exact for AurA's per-unit scaling, so each condition is an ordinary checkpoint:
the plain model is written once per model fingerprint, each intervention folded into one once per
intervention key, and the engine reloads its weights in place between conditions instead of
starting again.

On a CPU vLLM refuses per-request seeds: a condition's rows are sent together and the engine is
reseeded from their seeds first, so a condition's completions repeat for the same settings,
though they are not the ones our engine gives (a completion depends on its batch there).

>>> runner = VllmRunner(dtype="bfloat16")                                  # doctest: +SKIP
>>> run_evaluation(model, tok, aura, config, runner=runner)               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aura_core.base.files import atomic_folder, content_key
from aura_core.errors import AuraError, InterventionError
from aura_core.method.registry import PLAIN
from aura_core.model.loading import cache_root, model_fingerprint
from aura_core.runtime.decoding import DecodeRow, stop_ids
from aura_core.runtime.folding import export_model
from aura_core.runtime.inline import Inline
from aura_core.runtime.runner import Priority, T

if TYPE_CHECKING:
    from torch import nn

    from aura_core.base.batching import Tokenizer
    from aura_core.method.intervention import Intervention

__all__ = ["VLLM_ENV", "VllmRunner", "default_dtype", "vllm_python"]

ROOT = Path(__file__).resolve().parents[2]
VLLM_ENV = ROOT / ".venv-vllm"
WORKER = Path(__file__).with_name("vllm_worker.py")
STARTUP_TIMEOUT_S = 1800.0  # a first start compiles the model (minutes on a small CPU)


def vllm_python() -> Path | None:
    """The vLLM environment's Python: ``AURA_VLLM_PYTHON`` (empty: none), else the checkout's ``.venv-vllm``, else None.

    >>> vllm_python() is None or vllm_python().name.startswith("python")
    True
    """
    named = os.environ.get("AURA_VLLM_PYTHON")
    if named is not None:  # set but empty: vLLM is off here, even where .venv-vllm exists
        return Path(named) if named else None
    candidate = VLLM_ENV / "bin" / "python"
    return candidate if candidate.is_file() else None


def default_dtype() -> str:
    """vLLM's dtype here: bfloat16 where the hardware computes it (a GPU, or a CPU with AVX-512-BF16 or AMX), else float32.

    On a CPU without it, bfloat16 is emulated: on an AVX2 machine vLLM decoded 5.6× slower in it than in float32.

    >>> default_dtype() in ("bfloat16", "float32")
    True
    """
    import torch

    from aura_core.model.devices import cpu_has_native_bf16

    return "bfloat16" if torch.cuda.is_available() or cpu_has_native_bf16() else "float32"


def auto_engine() -> str:
    """What ``--engine auto`` decodes on: ``"vllm"`` where it is installed and computes in bfloat16, else ``"ours"``.

    vLLM's lead comes from bfloat16 on hardware that computes it: 985 tokens/s against our 255
    on a CPU with it. Without it, in float32 on 2 AVX2 cores, our engine at 128 rows decoded 183
    tokens/s and vLLM 174 (``python -m benchmarks engines``), and vLLM needs a minute or more to start.

    >>> auto_engine() in ("vllm", "ours")
    True
    """
    return "vllm" if vllm_python() is not None and default_dtype() == "bfloat16" else "ours"


_CAUSE = re.compile(r"\b(\w+(?:Error|Exception)): (.+)$")


def root_cause(log: Path | None) -> str | None:
    """The first error a vLLM log names other than the engine's own "died" line, or None.

    vLLM reports a worker's failure as ``EngineDeadError: … see stack trace above``; the cause is in its log.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "vllm.log"
    >>> _ = path.write_text("INFO ok\\nERROR [x.py:1] RuntimeError: Unsupported CPU attention: head_dim=8\\nEngineDeadError: see above\\n")
    >>> root_cause(path)
    'RuntimeError: Unsupported CPU attention: head_dim=8'
    """
    if log is None or not log.is_file():
        return None
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            found = _CAUSE.search(line.rstrip())
            if found and "EngineDead" not in found.group(1) and "Worker failed" not in found.group(2):
                return f"{found.group(1)}: {found.group(2)}"
    return None


def _sampling(row: DecodeRow, stops: list[int]) -> dict[str, Any]:
    """vLLM's sampling parameters for a row's settings (greedy is temperature 0 there)."""
    s = row.settings
    return {
        "temperature": s.temperature if s.do_sample else 0.0,
        "top_p": s.top_p if s.do_sample else 1.0,
        "top_k": s.top_k if (s.do_sample and s.top_k > 0) else 0,
        "repetition_penalty": s.repetition_penalty,
        "max_tokens": s.max_new_tokens,
        "stop_token_ids": stops,
    }


class _Worker:
    """One vLLM engine in a subprocess; one request at a time."""

    def __init__(self, python: Path, start: dict[str, Any], log_path: Path) -> None:
        self.log_path = log_path  # vLLM's own output, appended: where a failure's cause is
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:  # the child holds its own handle
            self.process = subprocess.Popen(
                [str(python), str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=str(start["model"]),  # a folder of ours, never the checkout: no module there shadows vLLM's
            )
        self.lock = threading.Lock()
        self.info = self.ask(start, timeout_s=STARTUP_TIMEOUT_S)

    def ask(self, request: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        with self.lock:
            try:
                stdin.write(json.dumps(request) + "\n")
                stdin.flush()
                line = stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
        if not line:
            code = self.process.poll()
            raise AuraError(f"the vLLM worker stopped (exit code {code}){self._why()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise AuraError(f"vLLM: {answer['error']}{self._why()}")
        return answer

    def _why(self) -> str:
        """The cause from the log, and where the log is: vLLM's own message often says only "see above"."""
        cause = root_cause(self.log_path)
        return f" ({cause}; its log: {self.log_path})" if cause else f" (its log: {self.log_path})"

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask({"op": "close"})
            except AuraError:
                pass
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


class VllmRunner:
    """Decodes rows on vLLM (one subprocess engine per model, started on first use); runs other work inline.

    ``dtype`` is vLLM's (default :func:`default_dtype`); ``engine_args`` go to ``vllm.LLM``
    as they are (``tensor_parallel_size``, ``max_num_seqs``, ``distributed_executor_backend="ray"`` …).
    """

    def __init__(
        self,
        *,
        dtype: str | None = None,
        seed: int = 0,
        engine_args: dict[str, Any] | None = None,
        python: Path | None = None,
        store: Path | None = None,
        log: Path | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        found = python or vllm_python()
        if found is None or not Path(found).is_file():
            raise AuraError("vLLM is not installed: run `bash scripts/setup.sh --vllm` (or set AURA_VLLM_PYTHON)")
        self.python = Path(found)
        self.dtype, self.seed = dtype or default_dtype(), seed
        self.engine_args = dict(engine_args or {})
        self.store = store or cache_root() / "vllm"
        self.log_path = log or self.store / "vllm.log"  # vLLM's own output: where a failure's cause is
        self.tokenizer = tokenizer
        self._worker: _Worker | None = None
        self._model_print: str | None = None
        self._applied: str = PLAIN  # the intervention whose tensors the engine holds
        self.startup_s: float | None = None
        self.version: str | None = None

    @property
    def completion_key(self) -> str:
        """What makes this runner's completions differ from another's (part of an evaluation's piece keys)."""
        return content_key(["vllm", self.dtype, self.seed, sorted(self.engine_args.items())])

    def describe(self) -> dict[str, object]:
        """The engine as a report records it."""
        return {"name": "vllm", "version": self.version, "dtype": self.dtype, "seed": self.seed, **self.engine_args}

    def run(self, work: Callable[[], T], *, priority: Priority = "bulk") -> T:
        return work()

    def decode(
        self,
        model: nn.Module,
        rows: Sequence[DecodeRow],
        *,
        priority: Priority = "bulk",
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Decode ``rows``: rows of one intervention and settings go to vLLM together, one prompt with ``n`` samples."""
        worker = self._ensure(model)
        stops = sorted(stop_ids(model))
        groups: dict[tuple[str, str], list[DecodeRow]] = {}
        interventions: dict[str, Intervention | None] = {}
        for row in rows:
            key = PLAIN if row.intervention is None else row.intervention.key()
            interventions[key] = row.intervention
            groups.setdefault((key, json.dumps(_sampling(row, stops), sort_keys=True)), []).append(row)
        done, total = 0, len(rows)
        for (key, sampling), group in groups.items():
            try:
                self._apply(model, key, interventions[key])
            except InterventionError as err:  # a gated or shifted edit no checkpoint holds: our engine decodes it
                print(f"note: {err}; these {len(group)} completions decode on our engine", file=sys.stderr)
                Inline().decode(model, group)
                done += len(group)
                if progress:
                    progress(done, total)
                continue
            samples_of: list[list[DecodeRow]] = []  # each prompt's rows: they come prompt-major, equal neighbours
            for row in group:
                if samples_of and samples_of[-1][0].prompt_ids == row.prompt_ids:
                    samples_of[-1].append(row)
                else:
                    samples_of.append([row])
            for n in sorted({len(prompt_rows) for prompt_rows in samples_of}):
                chosen = [prompt_rows for prompt_rows in samples_of if len(prompt_rows) == n]
                seed = int(content_key([self.seed, [prompt_rows[0].seed for prompt_rows in chosen]])[:8], 16)
                answer = worker.ask(
                    {
                        "op": "generate",
                        "prompts": [prompt_rows[0].prompt_ids for prompt_rows in chosen],
                        "n": n,
                        "seed": seed,
                        "sampling": json.loads(sampling),
                    }
                )
                for prompt_rows, samples in zip(chosen, answer["tokens"], strict=True):
                    for row, tokens in zip(prompt_rows, samples, strict=True):
                        row.tokens = [t for t in tokens if t not in stops]
                        row.done = True
                done += n * len(chosen)
                if progress:
                    progress(done, total)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> VllmRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ask(self, model: nn.Module, request: dict[str, Any], intervention: Intervention | None = None) -> dict[str, Any]:
        """Send one request of :mod:`~aura_core.runtime.vllm_worker` to the engine of ``model``, holding ``intervention``'s weights.

        The engine starts on first use; ``intervention`` (None: the plain model) is folded into a checkpoint once.
        """
        worker = self._ensure(model)
        self._apply(model, PLAIN if intervention is None else intervention.key(), intervention)
        return worker.ask(request)

    def _ensure(self, model: nn.Module) -> _Worker:
        fingerprint = model_fingerprint(model)
        if self._worker is not None and self._model_print == fingerprint:
            return self._worker
        self.close()
        folder = self._plain_checkpoint(model, fingerprint)
        started = time.perf_counter()
        start = {"model": str(folder), "dtype": self.dtype, "seed": self.seed, "engine_args": self.engine_args}
        print(f"starting vLLM on {folder.name} ({self.dtype}); a first start compiles for minutes", file=sys.stderr)
        self._worker = _Worker(self.python, start, self.log_path)
        self.startup_s = time.perf_counter() - started
        self.version = str(self._worker.info.get("version"))
        self._model_print, self._applied = fingerprint, PLAIN
        return self._worker

    def _plain_checkpoint(self, model: nn.Module, fingerprint: str) -> Path:
        """The plain model as an ordinary checkpoint folder, written once per fingerprint."""
        folder = self.store / f"model-{fingerprint}"
        if (folder / "config.json").is_file():
            return folder
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise AuraError("the vLLM runner needs the model's tokenizer to write its checkpoint")
        with atomic_folder(folder) as staging:
            model.save_pretrained(staging)  # type: ignore[operator]
            tokenizer.save_pretrained(staging)
        return folder

    def _apply(self, model: nn.Module, key: str, intervention: Intervention | None) -> None:
        """Give the engine the weights of ``intervention``: its folded checkpoint, written once by its key."""
        if key == self._applied:
            return
        base = self.store / f"model-{self._model_print}"
        folder = base if intervention is None else base.parent / f"{base.name}-{key}"
        if intervention is not None and not (folder / "config.json").is_file():
            if self.tokenizer is None:
                raise AuraError("the vLLM runner needs the model's tokenizer to write a checkpoint")
            export_model(model, self.tokenizer, intervention, folder)
        assert self._worker is not None
        self._worker.ask({"op": "weights", "path": str(folder)})
        self._applied = key
