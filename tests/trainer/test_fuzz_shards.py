"""Fuzzing the trainer's shard index: a shard damaged in any header field (checksums made to hold,
the manifest's size and SHA-256 made to match, so the damage reaches the scan) gives the index or
one TrainerError line naming the shard, never a traceback (issue 23)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lth.api.naming import MANIFEST_FILE
from lth_trainer.data import index as shard_index
from lth_trainer.store import TrainerError
from tests.trainer.shards import pattern_images, write_shards

BLOCK = 512
SOURCE = Path(tempfile.mkdtemp(prefix="lth-fuzz-shards-"))
write_shards(SOURCE, {"train": pattern_images(3, 6, 8, 0), "val": pattern_images(3, 3, 8, 1)}, 3, 6)
SHARD = (SOURCE / "train-00000.tar").read_bytes()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(SHARD)
    for _ in range(draw(st.integers(1, 3))):
        header = draw(st.integers(0, len(data) // BLOCK - 1)) * BLOCK
        at = header + draw(st.sampled_from([0, 99, 124, 130, 156, 257, 345, draw(st.integers(0, BLOCK - 1))]))
        patch = draw(st.binary(min_size=1, max_size=12))
        data[at : at + len(patch)] = patch
        if draw(st.booleans()):
            block = data[header : header + BLOCK]
            block[148:156] = b" " * 8
            data[header + 148 : header + 156] = f"{sum(block):06o}".encode() + b"\0 "
    cut = draw(st.none() | st.integers(0, len(data)))
    return bytes(data if cut is None else data[:cut])


@given(damaged())
@settings(max_examples=300)
def test_any_damaged_shard_is_indexed_or_refused_in_one_line(tmp_path_factory: Any, shard: bytes) -> None:
    data = Path(tmp_path_factory.mktemp("data"))
    for path in SOURCE.iterdir():
        shutil.copy(path, data / path.name)
    (data / "train-00000.tar").write_bytes(shard)
    manifest = json.loads((data / MANIFEST_FILE).read_text())
    manifest["shards"][0].update(bytes=len(shard), sha256=hashlib.sha256(shard).hexdigest())
    (data / MANIFEST_FILE).write_text(json.dumps(manifest))
    try:
        found = shard_index.index_split(data, shard_index.load_manifest(data), "train")
    except TrainerError as error:
        assert "\n" not in str(error) and "train-00000.tar" in str(error)
        return
    assert len(found) == 6 and ((found.offset + found.size) <= len(shard)).all()
