"""Writing files and folders so that a reader never sees half of one, even with two writers at once.

Every write goes to a uniquely named temporary file (or folder) beside its target, then
replaces the target in one rename; a crash leaves the old target or none, never a torn one.
Files end up readable by everyone (0644) and folders 0755, whoever the umask.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> atomic_write(folder / "a.txt", "hello").read_text()
'hello'
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from aura_core.errors import AuraError

__all__ = [
    "CONTENT_KEY",
    "atomic_folder",
    "atomic_path",
    "atomic_write",
    "content_hash",
    "content_key",
    "read_safetensors",
    "writable_path",
]

# The header entry that holds a safetensors file's content hash.
CONTENT_KEY = "content_blake2b"
FILE_MODE = 0o644
FOLDER_MODE = 0o755


def content_key(parts: object, length: int = 16) -> str:
    """The key of a piece of work: a hash of ``parts`` as JSON (dict keys sorted), ``length`` hex digits.

    Each kind of key keeps its length (stored keys and links name them), so callers pass it.

    >>> content_key(["model", 64]) == content_key(["model", 64]) != content_key(["model", 32])
    True
    >>> len(content_key({"a": 1}, length=24))
    24
    """
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def content_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """A hash of every tensor's name, dtype, shape and bytes, in name order: what a file must hold.

    Stored in a safetensors header and checked on load, it catches a file changed after it
    was written (flipped bytes, a copy cut short and padded) that still parses.

    >>> content_hash({"a": torch.zeros(2)}) == content_hash({"a": torch.zeros(2)}) != content_hash({"a": torch.ones(2)})
    True
    """
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str], bool | None]:
    """A safetensors file's tensors, its header's metadata, and whether the tensors match the content
    hash it stores (None: it stores none). A file that does not parse raises safetensors' own error.
    """
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    tensors = load_file(str(path))
    stored = metadata.get(CONTENT_KEY)
    return tensors, metadata, None if stored is None else stored == content_hash(tensors)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write to; it replaces ``path`` when the block ends.

    >>> with atomic_path(folder / "b.bin") as tmp:     # doctest: +SKIP
    ...     save_file(tensors, str(tmp))
    """
    path = writable_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise AuraError(f"{path}: cannot write here ({err.strerror or err})") from err
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise AuraError(f"{path}: the disk is full; free some space (or set AURA_CACHE_DIR elsewhere) and run again") from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def writable_path(path: str | Path) -> Path:
    """Where a write to ``path`` goes: a symlink's target (the link stays a link), never a special file.

    >>> writable_path("/dev/null")
    Traceback (most recent call last):
    ...
    aura_core.errors.AuraError: /dev/null: is not a regular file (a device, pipe or folder); give a file path
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        raise AuraError(f"{path}: is not a regular file (a device, pipe or folder); give a file path")
    return path


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """A fresh staging folder beside ``target`` to fill; it becomes ``target`` when the block ends.

    ``target`` must not exist, or be an empty folder. On an error the staging folder is removed.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AuraError(f"{target}: exists and is not an empty folder; choose a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        staging.chmod(FOLDER_MODE)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
