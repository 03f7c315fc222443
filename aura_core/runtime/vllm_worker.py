"""The vLLM side of :mod:`aura_core.runtime.vllm_runner`: a program run by the vLLM environment's Python.

It imports only the standard library and vLLM (that environment pins other versions of
transformers than this project), and speaks one JSON object per line: the first line on
stdin starts the engine, later lines ask for weights or completions, and every answer goes
to the stdout it started with (everything vLLM itself prints is sent to stderr).

    python aura_core/runtime/vllm_worker.py  < requests.jsonl

Requests (one per line):
    {"model": FOLDER, "dtype": "bfloat16", "seed": 0, "engine_args": {...}}   first line: start
    {"op": "weights", "path": FOLDER}                  reload every weight from this checkpoint folder
    {"op": "generate", "prompts": [[ids], ...], "n": 25, "seed": 7, "sampling": {...}}
    {"op": "steer", "path": FILE}                      per-request unit factors (a prototype, eager engines only)
    {"op": "generate", ..., "slots": [0, 1, ...]}      each prompt's row of those factors (0: untouched)
    {"op": "close"}

Steering multiplies MLP outputs per request inside vLLM's own batch, as the app's engine does per
row: FILE (safetensors) holds, per vLLM module name, a ``(slots, units)`` table whose row 0 is
ones. Every forward pass maps each token of the flattened batch to its request and that
request's slot (``SamplingParams.extra_args["aura_slot"]``). Module hooks do not run inside a
compiled graph, so the engine must be started with ``enforce_eager``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, TextIO


def _environment() -> None:
    """Settings vLLM reads when it is imported (set here, not at import of this file: tests import it)."""
    # On a small CPU machine vLLM keeps a core for its engine process unless told otherwise.
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    # vLLM drops to one thread per engine where OMP_NUM_THREADS is unset.
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    # vLLM 0.32's ahead-of-time compile cache fails to load on the CPU ('finalize_loading'), so every
    # start compiled for minutes again; its older cache path loads.
    os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    # Reseeding runs a small function of ours on the workers.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")


def _reseed(worker: Any, seed: int) -> None:
    """Seed the worker's random streams: on a CPU, vLLM refuses per-request seeds."""
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _install_steering(worker: Any, path: str) -> int:
    """Hook each tabled module of the worker's model; before every forward pass, map tokens to their requests' slots."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    runner = worker.model_runner
    if getattr(runner, "_aura_state", None) is not None:
        runner._aura_state["tables"].update(load_file(path))
        return len(runner._aura_state["tables"])
    state: dict[str, Any] = {"rows": None, "tables": load_file(path)}
    modules = dict(runner.get_model().named_modules())

    def hook_for(name: str) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> Any:
            rows = state["rows"]
            if rows is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            table = state["tables"][name]
            if table.dtype != hidden.dtype:
                table = state["tables"][name] = table.to(hidden.dtype)
            count = hidden.shape[0]
            chosen = rows[:count] if rows.shape[0] >= count else torch.nn.functional.pad(rows, (0, count - rows.shape[0]))
            edited = hidden * table.index_select(0, chosen)
            return (edited, *output[1:]) if isinstance(output, tuple) else edited

        return hook

    for name in state["tables"]:
        modules[name].register_forward_hook(hook_for(name))
    forward = runner._model_forward

    def steered_forward(*args: Any, **kwargs: Any) -> Any:
        batch = runner.input_batch
        count = batch.num_reqs
        starts = runner.query_start_loc.np[: count + 1]
        slots = []
        for req_id in batch.req_ids[:count]:
            extra = runner.requests[req_id].sampling_params.extra_args or {}
            slots.append(int(extra.get("aura_slot", 0)))
        state["rows"] = torch.repeat_interleave(torch.tensor(slots), torch.from_numpy(np.diff(starts).astype(np.int64)))
        try:
            return forward(*args, **kwargs)
        finally:
            state["rows"] = None

    runner._model_forward = steered_forward
    runner._aura_state = state
    return len(state["tables"])


def _answer(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _engine(start: dict[str, Any]) -> Any:
    import torch
    from vllm import LLM

    cpu = not torch.cuda.is_available()
    if cpu:
        # vLLM's CPU build reserves 92 % of free memory by default and refuses to start on a shared machine.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    args = {
        "dtype": start.get("dtype", "auto"),
        "seed": int(start.get("seed", 0)),
        # Sampling comes from the request only, never from the model's generation config.
        "generation_config": "vllm",
        **({"gpu_memory_utilization": 0.2} if cpu else {}),
        **start.get("engine_args", {}),
    }
    return LLM(model=start["model"], **args)


def _generate(llm: Any, request: dict[str, Any]) -> list[list[list[int]]]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm.collective_rpc(_reseed, args=(int(request["seed"]),))
    slots = request.get("slots")
    params: Any = SamplingParams(n=int(request["n"]), **request["sampling"])
    if slots is not None:  # one parameter set per prompt: each carries its slot of the steering tables
        params = [SamplingParams(n=int(request["n"]), extra_args={"aura_slot": int(s)}, **request["sampling"]) for s in slots]
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [[list(sample.token_ids) for sample in output.outputs] for output in outputs]


def main() -> int:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # vLLM's own output never mixes with the answers
    started = time.perf_counter()
    _environment()
    try:
        import vllm

        llm = _engine(json.loads(sys.stdin.readline()))
    except Exception as err:  # the client shows this line to the person who asked
        traceback.print_exc()
        _answer(out, {"error": f"vLLM did not start: {type(err).__name__}: {err}"})
        return 1
    _answer(out, {"ready": True, "version": vllm.__version__, "startup_s": round(time.perf_counter() - started, 2)})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "close":
                break
            if request["op"] == "weights":
                # In place, as a weight update: the compiled model and the cache memory stay.
                llm.collective_rpc("reload_weights", kwargs={"weights_path": str(request["path"]), "is_checkpoint_format": True})
                llm.reset_prefix_cache()  # cached keys and values belong to the old weights
                _answer(out, {"loaded": request["path"]})
            elif request["op"] == "steer":
                hooked = llm.collective_rpc(_install_steering, args=(str(request["path"]),))
                _answer(out, {"hooked": hooked})
            elif request["op"] == "generate":
                _answer(out, {"tokens": _generate(llm, request)})
            else:
                _answer(out, {"error": f"unknown request {request['op']!r}"})
        except Exception as err:
            traceback.print_exc()
            _answer(out, {"error": f"{type(err).__name__}: {err}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
