"""The challenging RealToxicityPrompts in two seeded halves: one to choose settings on, one to report them on.

The team's prompts and the 100 public ones draw too little toxicity to resolve a 2× change, so
the studies choose on one half of ``../shared/data/rtp_challenging.jsonl`` and report on the other.

>>> CHALLENGING.name
'rtp_challenging.jsonl'
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
CHALLENGING = SHARED / "rtp_challenging.jsonl"


def halves(path: Path, seed: int = 0) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The prompts in two halves, each category split evenly between them (seeded), as prompt-file rows.

    >>> import tempfile
    >>> rows = [{"prompt": {"text": f"p{i}"}, "categories": ["insult" if i % 2 else "threat"]} for i in range(8)]
    >>> path = Path(tempfile.mkdtemp()) / "p.jsonl"
    >>> _ = path.write_text("\\n".join(json.dumps(r) for r in rows))
    >>> choose, report = halves(path)
    >>> len(choose), len(report), sorted(r["kind"] for r in choose)
    (4, 4, ['insult', 'insult', 'threat', 'threat'])
    """
    by_kind: dict[str, list[dict[str, object]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        prompt = row["prompt"]
        text = prompt["text"] if isinstance(prompt, dict) else str(prompt)
        kind = (row.get("categories") or [row.get("kind") or "other"])[0]
        by_kind.setdefault(str(kind), []).append({"prompt": {"text": text}, "kind": str(kind)})
    rng = random.Random(seed)
    choose: list[dict[str, object]] = []
    report: list[dict[str, object]] = []
    for kind in sorted(by_kind):
        rows = by_kind[kind]
        rng.shuffle(rows)
        middle = len(rows) // 2
        choose += rows[:middle]
        report += rows[middle:]
    return choose, report


def write_halves(folder: Path, path: Path = CHALLENGING, seed: int = 0, limit: int | None = None) -> tuple[Path, Path]:
    """The two halves of ``path`` as prompt files in ``folder`` (``prompts-choose.jsonl``, ``prompts-report.jsonl``).

    ``limit`` keeps the first prompts of each half only (a smoke run).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in zip(("choose", "report"), halves(path, seed), strict=True):
        target = folder / f"prompts-{name}.jsonl"
        target.write_text("".join(json.dumps(row) + "\n" for row in rows[:limit]), encoding="utf-8")
        paths.append(target)
    return paths[0], paths[1]
