"""The MNIST demo data set in the ImageNet download layout."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from lth_spark.demo import main
from lth_spark.inputs import DEVKIT, GROUND_TRUTH, TRAIN_TAR, VAL_TAR


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_mnist_demo_layout(tmp_path: Path) -> None:
    assert main([str(tmp_path), "--bad-files"]) == 0
    with tarfile.open(tmp_path / TRAIN_TAR) as outer:
        inner = {m.name: _names(outer.extractfile(m).read()) for m in outer.getmembers()}  # type: ignore[union-attr]
    assert sorted(inner) == [f"n{d:08d}.tar" for d in range(10)]
    assert [len(names) for _, names in sorted(inner.items())] == [407] + [400] * 9
    with tarfile.open(tmp_path / VAL_TAR) as val:
        assert len(val.getnames()) == 1001
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress((tmp_path / DEVKIT).read_bytes()))) as devkit:
        truth = devkit.extractfile(f"ILSVRC2012_devkit_t12/{GROUND_TRUTH}").read().split()  # type: ignore[union-attr]
    ids = [int(t) for t in truth]
    assert len(ids) == 1001 and ids.count(10) == 101 and all(ids.count(i) == 100 for i in range(1, 10))
