"""The store's bounds: a size budget with least-recently-used eviction, and free space checked before long writes.

Everything the project writes lives under one folder (``AURA_CACHE_DIR``). Results are
content-keyed, so any of them can be computed again: they are evicted oldest use first once
the store passes its budget (``AURA_STORE_BUDGET``, default 8G). Converted models and
prepared experts (with their responses) are never evicted, nor are the results a prepared
experts' attachment names in its ``keeps`` list (the Start page's demo). Resume folders and half-written
temporary files that no writer has touched for a day are removed. A long write first checks
that the disk keeps ``AURA_MIN_FREE`` (default 512M) free after it.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> _ = (root / "generations").mkdir(), (root / "generations" / "a.json").write_text("x" * 100)
>>> store_usage(root, budget=1000).total
100
>>> [path.name for path in enforce_budget(root, budget=10)]
['a.json']
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aura_core.errors import AuraError

__all__ = [
    "ABANDONED_AFTER_S",
    "BUDGET_ENV",
    "DEFAULT_BUDGET",
    "DEFAULT_MIN_FREE",
    "EVICTABLE",
    "MIN_FREE_ENV",
    "StoreUsage",
    "enforce_budget",
    "ensure_free_space",
    "human_bytes",
    "mark_used",
    "min_free_space",
    "parse_size",
    "store_budget",
    "store_usage",
]

BUDGET_ENV = "AURA_STORE_BUDGET"
DEFAULT_BUDGET = "8G"
"""The store's budget unless ``AURA_STORE_BUDGET`` says otherwise: 0.5 GB of converted model leaves room for
about 40 Find-experts runs at the workshop cap (175 MB of responses each) before the oldest go."""
MIN_FREE_ENV = "AURA_MIN_FREE"
DEFAULT_MIN_FREE = "512M"
"""Free space a long write must leave on the disk (``AURA_MIN_FREE``): room for the system and other writers."""
ABANDONED_AFTER_S = 24 * 3600.0
"""A resume folder or temporary file untouched this long has no live writer (a writer saves every batch)."""
EVICTABLE = ("responses", "experts", "generations", "evaluations", "exports", "vllm")
"""The store's folders of results that can be computed again; every other folder (converted models) is kept.

In ``vllm`` only the checkpoints folded for one intervention (``model-<print>-<key>``, rewritten when
missing) are results; each model's plain checkpoint (``model-<print>``) is a converted model."""
# Folders inside an evictable folder whose children are the entries (reports are one file each).
_CONTAINERS = {("evaluations", "reports")}
_RESUME_SUFFIX = ".parts"
_PLAIN_CHECKPOINT = re.compile(r"model-[0-9a-f]+")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", re.IGNORECASE)


def parse_size(text: str, name: str = BUDGET_ENV) -> int:
    """Bytes from ``text``: a number with an optional K, M, G or T (powers of 1024); a clear error otherwise.

    >>> parse_size("8G"), parse_size("512M"), parse_size("1000")
    (8589934592, 536870912, 1000)
    >>> parse_size("lots")
    Traceback (most recent call last):
    ...
    aura_core.errors.AuraError: AURA_STORE_BUDGET must be a size such as 8G, 500M or 1000000 (bytes), not 'lots'
    """
    found = _SIZE.fullmatch(str(text))
    if found is None:
        raise AuraError(f"{name} must be a size such as 8G, 500M or 1000000 (bytes), not {str(text)[:40]!r}")
    return int(float(found.group(1)) * _UNITS[found.group(2).upper()])


def store_budget(environ: Mapping[str, str] | None = None) -> int:
    """The store's budget in bytes: ``AURA_STORE_BUDGET`` or :data:`DEFAULT_BUDGET`.

    >>> store_budget({"AURA_STORE_BUDGET": "2G"})
    2147483648
    """
    env = os.environ if environ is None else environ
    return parse_size(env.get(BUDGET_ENV) or DEFAULT_BUDGET, BUDGET_ENV)


def min_free_space(environ: Mapping[str, str] | None = None) -> int:
    """Bytes a long write must leave free: ``AURA_MIN_FREE`` or :data:`DEFAULT_MIN_FREE`."""
    env = os.environ if environ is None else environ
    return parse_size(env.get(MIN_FREE_ENV) or DEFAULT_MIN_FREE, MIN_FREE_ENV)


def human_bytes(size: float) -> str:
    """``size`` bytes for a person to read.

    >>> human_bytes(1536), human_bytes(3 * 2**30)
    ('1.5 KB', '3.0 GB')
    """
    if abs(size) < 1024:
        return f"{size:.0f} B"
    for unit in ("KB", "MB"):
        size /= 1024
        if abs(size) < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} GB"


@dataclass(frozen=True)
class StoreUsage:
    """What the store holds: ``total`` bytes, of which ``kept`` are never evicted, against ``budget``."""

    total: int
    kept: int
    budget: int

    def describe(self) -> str:
        """One line: ``store 1.3 GB of 8.0 GB (0.5 GB kept: models and prepared experts)``."""
        return (
            f"store {human_bytes(self.total)} of {human_bytes(self.budget)} "
            f"({human_bytes(self.kept)} kept: models and prepared experts)"
        )

    def as_dict(self) -> dict[str, int]:
        return {"store_bytes": self.total, "store_kept_bytes": self.kept, "store_budget_bytes": self.budget}


@dataclass(frozen=True)
class _Entry:
    path: Path
    size: int
    used: float  # the newest modification time in it: writes and mark_used both set it
    kept: bool
    resumable: bool  # a resume folder or a temporary file: removed when abandoned, never by the budget


def _measure(path: Path) -> tuple[int, float]:
    """Bytes under ``path`` (apparent sizes; links not followed) and its newest modification time."""
    try:
        info = path.lstat()
    except OSError:
        return 0, 0.0
    if not path.is_dir() or path.is_symlink():
        return info.st_size, info.st_mtime
    size, newest = 0, info.st_mtime
    for folder, dirs, files in os.walk(path):
        for name in [*files, *dirs]:
            try:
                child = os.lstat(os.path.join(folder, name))
            except OSError:  # removed while we looked: another process evicted or finished it
                continue
            newest = max(newest, child.st_mtime)
            if name in files:
                size += child.st_size
    return size, newest


def _prepared_keys(root: Path) -> set[str]:
    """Every experts key the prepared registry names (its table is ``{model: {name: key}}``)."""
    try:
        table = json.loads((root / "experts" / "prepared.json").read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(table, dict):
        return set()
    return {str(key) for names in table.values() if isinstance(names, dict) for key in names.values()}


def _needed_by_prepared(root: Path, prepared: set[str]) -> set[Path]:
    """The results prepared experts' attachments need (``{"keeps": ["generations/KEY.json"]}``), inside the store."""
    inside = root.resolve()
    needed: set[Path] = set()
    for key in prepared:
        for attachment in sorted((root / "experts" / key).glob("*.json")):
            try:
                value = json.loads(attachment.read_text())
            except (OSError, ValueError):
                continue
            for relative in value.get("keeps", []) if isinstance(value, dict) else []:
                path = (root / str(relative)).resolve()
                if path.is_relative_to(inside):
                    needed.add(path)
    return needed


def _entries(root: Path) -> list[_Entry]:
    prepared = _prepared_keys(root)
    needed = _needed_by_prepared(root, prepared)
    found: list[_Entry] = []

    def add(path: Path, kept: bool = False) -> None:
        size, used = _measure(path)
        transient = path.name.startswith(".") or path.name.endswith(_RESUME_SUFFIX)
        found.append(_Entry(path, size, used, kept and not transient, transient))

    try:
        tops = sorted(root.iterdir())
    except OSError:
        return found
    for top in tops:
        if top.name not in EVICTABLE or not top.is_dir() or top.is_symlink():
            add(top, kept=True)
            continue
        for child in sorted(top.iterdir()):
            if (top.name, child.name) in _CONTAINERS and child.is_dir():
                for grandchild in sorted(child.iterdir()):
                    add(grandchild)
            elif top.name == "experts":
                add(child, kept=not child.is_dir() or child.name in prepared)  # the registry and its lock stay
            elif top.name == "responses":
                add(child, kept=child.name.removesuffix(".safetensors") in prepared)
            elif top.name == "vllm":
                add(child, kept=_PLAIN_CHECKPOINT.fullmatch(child.name) is not None)
            else:
                add(child, kept=child.resolve() in needed)
    return found


def store_usage(root: str | Path, budget: int | None = None) -> StoreUsage:
    """What the store under ``root`` holds, against ``budget`` (default :func:`store_budget`)."""
    entries = _entries(Path(root))
    return StoreUsage(
        total=sum(e.size for e in entries),
        kept=sum(e.size for e in entries if e.kept),
        budget=store_budget() if budget is None else budget,
    )


def mark_used(path: str | Path) -> None:
    """Note that ``path`` (a stored result) was read now, so eviction takes it last; silent if it is gone."""
    try:
        os.utime(path)
    except OSError:
        pass  # evicted meanwhile, or a read-only store: the result was still read


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False  # another process removed it first
    except OSError:
        return False  # not ours to remove (permissions): it stays, and is counted
    return True


def enforce_budget(
    root: str | Path,
    budget: int | None = None,
    *,
    keep: Iterable[str | Path] = (),
    now: float | None = None,
) -> list[Path]:
    """Remove abandoned resume folders, then the least recently used results until the store fits ``budget``.

    ``keep`` names results just written (never evicted by this call). Returns what was removed.
    Kept parts (models, prepared experts) are never removed, even when they alone exceed the budget.
    """
    budget = store_budget() if budget is None else budget
    now = time.time() if now is None else now
    spared = {Path(p).resolve() for p in keep}
    removed: list[Path] = []
    live: list[_Entry] = []
    for entry in _entries(Path(root)):
        if entry.resumable and now - entry.used > ABANDONED_AFTER_S:
            if _remove(entry.path):
                removed.append(entry.path)
                continue
        live.append(entry)
    total = sum(e.size for e in live)
    evictable = sorted(
        (e for e in live if not e.kept and not e.resumable and e.path.resolve() not in spared), key=lambda e: e.used
    )
    for entry in evictable:
        if total <= budget:
            break
        if _remove(entry.path):
            removed.append(entry.path)
        total -= entry.size
    return removed


def ensure_free_space(path: str | Path, need: int = 0, what: str = "this run") -> None:
    """Refuse, before any work, when writing ``need`` more bytes at ``path`` would leave under ``AURA_MIN_FREE`` free.

    >>> ensure_free_space(".", need=2**62)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aura_core.errors.AuraError: the disk is nearly full: ... free; free some space (or set AURA_CACHE_DIR elsewhere) and run again
    """
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the target may not exist yet: its disk is its nearest existing parent's
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: the write itself still fails with one clear line when the disk is full
    floor = min_free_space()
    if free < need + floor:
        raise AuraError(
            f"the disk is nearly full: {what} needs about {human_bytes(need)} and "
            f"{human_bytes(floor)} must stay free, but {folder} has {human_bytes(free)} free; "
            "free some space (or set AURA_CACHE_DIR elsewhere) and run again"
        )
