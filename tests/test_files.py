"""Writes that never leave half a file, integrity hashes that catch changed bytes."""

import json
import os
import stat
import threading
from pathlib import Path

import pytest
import torch

from aura_core.base.files import atomic_folder, atomic_path, atomic_write
from aura_core.errors import AuraError, DataError, InterventionError
from aura_core.method.intervention import Intervention
from aura_core.method.responses import Responses


def _flip_a_byte_near_the_end(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's values, past the JSON header
    path.write_bytes(bytes(data))


def test_written_files_are_complete_readable_by_all_and_leave_no_temporaries(tmp_path):
    old_umask = os.umask(0o077)  # a strict umask must not make outputs private
    try:
        path = atomic_write(tmp_path / "deep" / "a.json", "{}")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "{}" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_two_writers_of_one_path_never_share_a_temporary_file(tmp_path):
    """Fixed temporary names (``X.tmp``) let two writers interleave into one file."""
    target = tmp_path / "same.bin"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors = []

    def write(data: bytes) -> None:
        try:
            for _ in range(5):
                atomic_write(target, data)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["same.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = atomic_write(tmp_path / "keep.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_folders_appear_whole_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "export") as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(tmp_path / "export") as staging:
        (staging / "config.json").write_text("{}")
    assert (tmp_path / "export" / "config.json").is_file()
    with pytest.raises(AuraError, match="not an empty folder"):
        with atomic_folder(tmp_path / "export"):
            pass


def test_changed_bytes_in_a_responses_file_are_caught(tmp_path):
    responses = Responses({"m": torch.rand(6, 4)}, torch.tensor([0, 1, 0, 1, 0, 1]), {"units": ["m"]})
    path = responses.save(tmp_path / "r.safetensors")
    assert torch.equal(Responses.load(path).per_module["m"], responses.per_module["m"])
    _flip_a_byte_near_the_end(path)
    with pytest.raises(DataError, match=r"r\.safetensors: its content changed after it was written"):
        Responses.load(path)


def test_changed_bytes_in_an_intervention_file_are_caught(tmp_path):
    path = Intervention({"m": torch.tensor([0.9, 0.2, 0.6], dtype=torch.float64)}).save(tmp_path / "iv.safetensors")
    assert Intervention.load(path).auroc["m"].tolist() == [0.9, 0.2, 0.6]
    _flip_a_byte_near_the_end(path)
    with pytest.raises(InterventionError, match=r"iv\.safetensors: its content changed after it was written"):
        Intervention.load(path)


def test_a_write_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    from aura_core.base.files import atomic_write

    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_write_to_a_device_or_folder_is_refused_and_the_node_stays(tmp_path):
    import os

    import pytest

    from aura_core.base.files import atomic_write
    from aura_core.errors import AuraError

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for special in (fifo, tmp_path, type(tmp_path)(os.devnull)):
        with pytest.raises(AuraError, match="not a regular file"):
            atomic_write(special, "x")
    assert fifo.exists() and not fifo.is_file()


def test_two_processes_registering_prepared_experts_at_once_lose_nothing(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "experts"
    keys = [f"{i:020x}" for i in range(80)]
    for key in keys:
        (root / key).mkdir(parents=True)
        (root / key / "recipe.json").write_text("{}")
    code = (
        "import sys; from aura_core.analysis.experts import register_prepared\n"
        "for key in sys.argv[2:]: register_prepared(sys.argv[1], key, name=key)\n"
    )
    env = {**os.environ, "AURA_CACHE_DIR": str(tmp_path)}
    root_dir = Path(__file__).resolve().parents[1]
    writers = [subprocess.Popen([sys.executable, "-c", code, model, *keys], cwd=root_dir, env=env) for model in ("m1", "m2")]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    table = json.loads((root / "prepared.json").read_text())
    assert {model: len(names) for model, names in table.items()} == {"m1": 80, "m2": 80}
