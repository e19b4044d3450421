"""The content-addressed store and the bitstream cache."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest
from fakes import NoiseCodec

from vcm_eval.codecs import LosslessCodec
from vcm_eval.codecs.cache import KIND, CachedCodec
from vcm_eval.store import Store, StoreError, UnusableObjectError, content_key
from vcm_eval.types import Frame


def test_content_key_depends_on_every_part_and_on_order():
    assert content_key({"a": 1, "b": 2}) == content_key({"b": 2, "a": 1})
    assert content_key("x", b"12") != content_key("x", b"21")
    assert content_key("ab", "c") != content_key("a", "bc")


def test_round_trips_and_no_temporary_files_left(tmp_path):
    store = Store(tmp_path)
    store.write_json("k", "ab12", {"x": [1, 2]})
    store.write_arrays("a", "cd34", {"m": np.arange(6).reshape(2, 3)})
    assert store.read_json("k", "ab12") == {"x": [1, 2]}
    np.testing.assert_array_equal(store.read_arrays("a", "cd34")["m"], np.arange(6).reshape(2, 3))
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith(".tmp-")]
    assert leftovers == []


def test_stale_temporaries_of_unfinished_writes_are_removed_and_nothing_else(tmp_path):
    store = Store(tmp_path)
    kept = store.write_json("detections", "ab12", {"x": 1})
    folder = os.path.dirname(kept)
    old, fresh = os.path.join(folder, ".tmp-dead.json"), os.path.join(folder, ".tmp-busy.json")
    for path in (old, fresh):
        with open(path, "wb") as f:
            f.write(b"0" * 100)
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    os.utime(kept, (hour_ago, hour_ago))  # an old result is a result: never touched
    assert store.remove_stale_temporaries(3600) == (1, 100)
    assert not os.path.exists(old) and os.path.exists(fresh) and store.read_json("detections", "ab12") == {"x": 1}
    assert store.remove_stale_temporaries(0) == (1, 100)
    assert store.remove_stale_temporaries(0) == (0, 0)
    assert Store(tmp_path / "absent").remove_stale_temporaries(0) == (0, 0)


def test_a_temporary_it_may_not_remove_is_left(tmp_path, monkeypatch):
    store = Store(tmp_path)
    folder = os.path.dirname(store.write_json("detections", "ab12", {"x": 1}))
    theirs = os.path.join(folder, ".tmp-other-user.json")
    open(theirs, "wb").close()

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "unlink", refused)
    assert store.remove_stale_temporaries(0) == (0, 0)
    monkeypatch.undo()
    assert os.path.exists(theirs)


def test_missing_and_damaged_objects_name_the_file(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(StoreError, match="not in the store"):
        store.read_json("k", "ee00")
    path = store.write_json("k", "ff00", {"x": 1})
    with open(path, "w") as f:
        f.write('{"x": ')
    with pytest.raises(StoreError, match=r"ff00\.json: no checksum header .*moved to .*damaged"):
        store.read_json("k", "ff00")
    assert not os.path.exists(path)  # set aside, so that its task runs again


def _writer(root: str, n: int) -> None:
    store = Store(root)
    for _ in range(n):
        store.write_bytes("race", "aa11", ".bin", b"x" * 100_000)


def test_racing_writers_leave_one_valid_object(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 20)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert Store(tmp_path).read_bytes("race", "aa11", ".bin") == b"x" * 100_000
    assert os.listdir(tmp_path / "race" / "aa") == ["aa11.bin"]


def test_cache_encodes_once_and_reports_it(tmp_path):
    codec = NoiseCodec()
    coder = CachedCodec(codec, Store(tmp_path))
    frame = Frame.gray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 1024)
    first = coder.encode(frame, 30, label="p")
    second = coder.encode(frame, 30, label="p")
    third = coder.encode(frame, 31, label="p")
    assert codec.calls == 2 and not first.from_cache and second.from_cache and third.key != first.key
    assert second.key == first.key and second.num_bytes == first.num_bytes
    # another codec identity is another bitstream
    assert CachedCodec(NoiseCodec(amplitude=3), Store(tmp_path)).encode(frame, 30).key != first.key


def test_truncated_bitstream_in_the_store_is_an_error_naming_it(tmp_path):
    store = Store(tmp_path)
    coder = CachedCodec(LosslessCodec(), store)
    frame = Frame.gray(np.random.default_rng(0).integers(0, 1024, (32, 32)).astype(np.uint16))
    stored = coder.encode(frame, 30)
    path = store.path(KIND, stored.key, ".bin")
    with open(path, "r+b") as f:
        f.truncate(stored.num_bytes // 2)
    with pytest.raises(UnusableObjectError, match=rf"{stored.key}\.bin: bitstream has \d+ bytes but was written with"):
        coder.decode(stored.key, frame)
    assert not store.exists(KIND, stored.key, ".bin")  # set aside with its record: the next encode makes it anew
    assert not coder.encode(frame, 30).from_cache


def test_delete_removes_one_object_and_tolerates_a_missing_one(tmp_path):
    store = Store(tmp_path)
    store.write_arrays("clayers", "ab12", {"c2": np.zeros((2, 3, 4), np.float32)})
    store.write_json("coded", "ab12", {"x": 1})
    usage = store.disk_usage()
    assert set(usage) == {"clayers", "coded"} and usage["clayers"] > 2 * 3 * 4 * 4
    assert store.delete("clayers", "ab12", ".npz") and not store.exists("clayers", "ab12", ".npz")
    assert not store.delete("clayers", "ab12", ".npz")  # a second driver, or a resumed one, may try again
    assert store.disk_usage()["clayers"] == 0 and store.read_json("coded", "ab12") == {"x": 1}
