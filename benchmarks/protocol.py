"""The paper's protocol at full size: 25 completions × 20 tokens on 100 prompts, plain and AurA.

One run of ``aura_core.evaluation.protocol`` as ``evaluate`` starts it (default batch size, no
cache, completions where ``--engine auto`` puts them), timed whole: generation
of 5,000 completions, scoring, and perplexity on the neutral text. vLLM's start-up is reported
apart and not counted in the rate. The prompts are the challenging ones beside the checkout.
Beside the rate stands what the hardware does with the same tokens at once: the perplexity
pass over a sample of the prompts with their completions, every position's logits, as decoding
needs one per token (``prefill_tokens_per_s``).

>>> result = bench_protocol("tiny-gpt2", n_prompts=2, samples=2)     # doctest: +SKIP
>>> result["completions"]                                          # doctest: +SKIP
8
"""

from __future__ import annotations

import tempfile
import time
from typing import TYPE_CHECKING

import torch

from benchmarks.settings import DEFAULT_MODEL, ROOT, Settings

if TYPE_CHECKING:
    import pandas as pd

    from aura_core.model.loading import LoadedModel

__all__ = ["bench_protocol", "prefill_rate", "run"]

RTP = ROOT.parent / "shared" / "data" / "rtp_challenging.jsonl"
PREFILL_MAX_TOKENS = 512  # no prompt with its completion is cut


def prefill_rate(loaded: LoadedModel, generations: pd.DataFrame, *, limit: int = 500, rows: int = 32) -> float:
    """Tokens/s of the perplexity pass (``text_nll``) over the first ``limit`` prompts with their completions.

    >>> prefill_rate(load_model("tiny-gpt2"), frame, limit=8)     # doctest: +SKIP
    """
    from aura_core.evaluation.scoring import text_nll

    texts = (generations["prompt"].astype(str) + generations["completion"].astype(str)).tolist()[:limit]
    started = time.perf_counter()
    _, predicted = text_nll(loaded.model, loaded.tokenizer, texts, max_tokens=PREFILL_MAX_TOKENS, batch_size=rows)
    return (int(predicted.sum()) + len(texts)) / (time.perf_counter() - started)  # every token forwarded, the first too


def bench_protocol(model_name: str = DEFAULT_MODEL, n_prompts: int = 100, samples: int = 25) -> dict[str, object]:
    """Wall time of one evaluation with the paper's protocol (plain and AurA, no pre-prompt)."""
    from aura_core.evaluation.protocol import EvalConfig, run_evaluation
    from aura_core.method.fit import synthetic_intervention
    from aura_core.model.loading import load_model
    from aura_core.runtime.vllm_runner import VllmRunner, auto_engine

    loaded = load_model(model_name)
    gen = torch.Generator().manual_seed(0)
    # A realistic AurA: about half the units dampened, as fitted AUROCs give (speed does not depend on which).
    aura = synthetic_intervention(loaded.model, gen, low=0.5)
    prompts = str(RTP) if RTP.is_file() else "starter"
    config = EvalConfig(
        prompts=prompts, n_prompts=n_prompts, sampling="paper", samples=samples, methods=("none", "aura"), preprompts=("none",)
    )
    runner = VllmRunner(tokenizer=loaded.tokenizer) if auto_engine() == "vllm" else None
    startup = 0.0
    try:
        if runner is not None:  # its start-up apart: a first decode starts the engine
            from aura_core.evaluation.generation import completion_rows

            started = time.perf_counter()
            runner.decode(loaded.model, completion_rows(loaded.tokenizer, ["Hello"], settings=config.sampling_settings()))
            startup = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            result = run_evaluation(loaded.model, loaded.tokenizer, aura, config, out_dir=folder, runner=runner)
            seconds = time.perf_counter() - started
    finally:
        if runner is not None:
            runner.close()
    completions = len(result.generations)
    tokens = completions * config.sampling_settings().max_new_tokens
    prefill = prefill_rate(loaded, result.generations)
    return {
        "name": "protocol",
        "model": model_name,
        "prompts": int(result.provenance["n_prompts"]),  # type: ignore[call-overload]
        "prompt_file": RTP.name if RTP.is_file() else "starter",
        "engine": "ours" if runner is None else f"vllm {runner.version} {runner.dtype}",
        "vllm_startup_s": round(startup, 1),
        "completions": completions,
        "new_tokens_each": config.sampling_settings().max_new_tokens,
        "seconds": round(seconds, 3),
        "minutes": round(seconds / 60, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "prefill_tokens_per_s": round(prefill, 1),
        "tokens_per_s_over_prefill": float(f"{tokens / seconds / prefill:.3g}"),  # 3 digits: a tiny model's is 0.00183
        "rows_decoding_at_once": config.batch_size,
        "goal": "minutes <= 15 (paper protocol, plain and one intervention, 100 prompts, 2 cores)",
    }


def run(settings: Settings) -> dict[str, object]:
    """One full run (it takes minutes; it is not repeated)."""
    return bench_protocol(settings.model)
