"""Shards of `prepared` data may come from anyone: the trainer reads only the data directory's own
files, checks them against the manifest's checksums, and never decodes an image whose header
declares more than spec.dataset.maxImagePixels (issue 23)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lth.api.naming import MANIFEST_FILE
from lth_trainer.data import index as shard_index
from lth_trainer.data import loader
from lth_trainer.store import TrainerError
from tests.spark.hostile import jpeg_claiming
from tests.trainer.conftest import subprocess_env
from tests.trainer.shards import pattern_images, write_shards
from tests.trainer.test_crops import WHOLE, whole_images


def _data(tmp_path: Path) -> Path:
    samples = pattern_images(2, 8, 16, seed=1)
    write_shards(tmp_path / "data", {"train": samples, "val": samples}, classes=2, per_shard=8)
    return tmp_path / "data"


@pytest.mark.parametrize("path", ["../outside.tar", "/etc/passwd", "sub/train-00000.tar", ".hidden.tar"])
def test_a_manifest_naming_a_file_outside_the_data_directory_is_refused(tmp_path: Path, path: str) -> None:
    data = _data(tmp_path)
    manifest = json.loads((data / MANIFEST_FILE).read_text())
    manifest["shards"][0]["path"] = path
    (data / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(TrainerError) as caught:
        shard_index.load_manifest(data)
    assert "shards[0].path" in str(caught.value) and "\n" not in str(caught.value)


def test_a_shard_that_changed_since_the_manifest_is_refused(tmp_path: Path) -> None:
    """Same size, other bytes (one image's pixels): the checksum says so when the index is built."""
    data = _data(tmp_path)
    shard = data / "train-00000.tar"
    with tarfile.open(shard) as tar:
        first = tar.getmembers()[0]
    blob = bytearray(shard.read_bytes())
    blob[first.offset_data + 200] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with pytest.raises(TrainerError, match=r"train-00000.tar: SHA-256 .* differs from the manifest"):
        shard_index.index_split(data, shard_index.load_manifest(data), "train")


LIMITED_FETCH = """
import json, resource, sys
from pathlib import Path
from lth_trainer.data import index, loader
from lth_trainer.store import TrainerError
data = Path(sys.argv[1])
found = index.index_split(data, index.load_manifest(data), "train")
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), size + (1 << 30)))  # 1 GiB more than torch's
try:
    loader.ShardDataset(found, 16, augment=False, seed=0).__getitems__([(0, i) for i in range(4)])
    print(json.dumps({"error": None}))
except TrainerError as error:
    print(json.dumps({"error": str(error)}))
"""


@pytest.mark.parametrize("row", [0, 2])
def test_a_shard_image_whose_header_declares_30000x30000_is_refused_before_decoding(
    tmp_path: Path, row: int
) -> None:
    """Under 1 GiB of address space beyond what torch maps, the batch that holds it fails with
    the shard and byte named; a decode would have asked for 2.5 GiB."""
    samples = pattern_images(2, 4, 16, seed=1)
    data = tmp_path / "data"
    write_shards(data, {"train": samples, "val": samples}, classes=2, per_shard=4)
    shard = data / "train-00000.tar"
    with tarfile.open(shard) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".jpg")][row]
        original = tar.extractfile(member).read()  # type: ignore[union-attr]
    blob = shard.read_bytes()
    patched = jpeg_claiming(original, 30000, 30000)
    assert len(patched) == len(original)
    shard.write_bytes(blob[: member.offset_data] + patched + blob[member.offset_data + len(patched) :])
    manifest = json.loads((data / MANIFEST_FILE).read_text())
    manifest["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (data / MANIFEST_FILE).write_text(json.dumps(manifest))
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_FETCH, str(data)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    error = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    assert error is not None and "train-00000.tar at byte" in error
    assert "30000x30000" in error and "maxImagePixels" in error


def test_the_cap_is_the_specs(tmp_path: Path) -> None:
    data = _data(tmp_path)
    found = shard_index.index_split(data, shard_index.load_manifest(data), "train")
    with pytest.raises(TrainerError, match=r"a 16x16 image, more than spec.dataset.maxImagePixels \(255\)"):
        loader.ShardDataset(found, 16, False, 0, max_pixels=255).__getitems__([(0, 0)])


def test_whole_stored_images_differ_in_size_but_each_is_held_to_the_cap(tmp_path: Path) -> None:
    """Whole stored images (issue 27) come in many sizes, so a batch of mixed sizes loads, and
    only the cap bounds them: an image whose header declares more is refused before decoding,
    naming its shard and byte."""
    data = tmp_path / "data"
    write_shards(data, {"train": whole_images(8, 0), "val": whole_images(4, 1)}, 4, 8, parameters=WHOLE)
    found = shard_index.index_split(data, shard_index.load_manifest(data), "train")
    items = [(0, i) for i in range(8)]
    batch = loader.ShardDataset(found, 28, augment=True, seed=0, whole=True).__getitems__(items)
    assert batch.images.shape[0] == 8 and batch.boxes.shape == (8, 5)
    capped = loader.ShardDataset(found, 28, augment=True, seed=0, whole=True, max_pixels=1100)
    with pytest.raises(TrainerError) as caught:
        capped.__getitems__(items)
    message = str(caught.value)
    assert "train-00000.tar at byte " in message and "more than spec.dataset.maxImagePixels (1100)" in message
