"""Tiny data in the shard layout the Spark job writes (lth.api.data_manifest): for tests
and benchmarks, until real shards exist."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import simplejpeg

from lth.api.data_manifest import ClassInfo, DataManifest, ShardInfo, SplitInfo


def pattern_images(classes: int, count: int, size: int, seed: int) -> list[tuple[npt.NDArray[np.uint8], int]]:
    """Learnable images: class c is a bright bar at a class-specific row/column, plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        label = i % classes
        image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        band = slice(label * size // classes, (label + 1) * size // classes)
        if label % 2:
            image[band, :, :] = 220
        else:
            image[:, band, :] = 220
        out.append((image, label))
    return out


def write_shards(
    data_dir: Path,
    splits: dict[str, list[tuple[npt.NDArray[np.uint8], int]]],
    classes: int,
    per_shard: int,
    quality: int = 95,
    parameters: dict[str, object] | None = None,
) -> DataManifest:
    """`<split>-NNNNN.tar` with `<key>.jpg` + `<key>.cls` members, and manifest.json."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shards: list[ShardInfo] = []
    split_infos: dict[str, SplitInfo] = {}
    pixels: list[npt.NDArray[np.float64]] = []
    size = 0
    for split, samples in splits.items():
        for number, start in enumerate(range(0, len(samples), per_shard)):
            path = data_dir / f"{split}-{number:05d}.tar"
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
                for key, (image, label) in enumerate(samples[start : start + per_shard], start=start):
                    size = image.shape[0]
                    jpeg = simplejpeg.encode_jpeg(
                        np.ascontiguousarray(image), quality=quality, colorspace="RGB"
                    )
                    for ext, payload in (("jpg", jpeg), ("cls", str(label).encode())):
                        member = tarfile.TarInfo(f"{key:08d}.{ext}")
                        member.size = len(payload)
                        tar.addfile(member, io.BytesIO(payload))
            blob = path.read_bytes()
            count = len(samples[start : start + per_shard])
            shards.append(
                ShardInfo(
                    split=split,
                    path=path.name,
                    images=count,
                    bytes=len(blob),
                    sha256=hashlib.sha256(blob).hexdigest(),
                )
            )
        per_class = [sum(1 for _, label in samples if label == c) for c in range(classes)]
        split_infos[split] = SplitInfo(images=len(samples), per_class=per_class)
        if split == "train":
            pixels = [image.reshape(-1, 3) / 255.0 for image, _ in samples]
    stacked = np.concatenate(pixels)
    manifest = DataManifest(
        image_size=int(parameters.get("image_size", size)) if parameters else size,  # type: ignore[call-overload]
        classes=[ClassInfo(index=c, wnid=f"c{c}", name=f"class {c}") for c in range(classes)],
        splits=split_infos,
        shards=shards,
        mean=tuple(float(v) for v in stacked.mean(axis=0)),
        std=tuple(float(v) for v in stacked.std(axis=0)),
        parameters=parameters or {},
    )
    (data_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return manifest
