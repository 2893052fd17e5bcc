"""The contract between the Spark job and the trainer: `data/manifest.json`.

The Spark job writes shards in WebDataset layout (`<split>-NNNNN.tar`, members
`<key>.jpg` and `<key>.cls` holding the class index as text) and this manifest
last, atomically: a data directory with a manifest is complete. Like lth.api,
this module needs only pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lth.api.spec import DatasetSpec

MANIFEST_VERSION = 1

Split = Literal["train", "val", "test"]
Resize = Literal["squash", "center-crop", "whole"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassInfo(_Model):
    index: int = Field(ge=0, description="Position of the id in sorted order.")
    wnid: str = Field(description="WordNet id (n01440764) or folder name.")
    name: str = Field(description="Human-readable name (from the devkit, or the folder name).")


class ShardInfo(_Model):
    split: Split
    path: str = Field(description="File name, relative to the data directory.")
    images: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SplitInfo(_Model):
    images: int = Field(ge=0)
    per_class: list[int] = Field(description="Images per class index (empty for the unlabeled test split).")


class SkippedFile(_Model):
    split: Split
    source: str = Field(description="The input file or archive member, e.g. train/n01440764.tar:x.JPEG.")
    reason: str


class StoredGeometry(_Model):
    """How the images in the shards were resized (`spec.dataset`'s resize, imageSize, shortSide,
    maxSide as the Spark job applied them): a run is refused data stored otherwise."""

    resize: Resize
    image_size: int
    short_side: int | None = None
    max_side: int | None = None

    def describe(self) -> str:
        if self.resize == "whole":
            return f"whole images, short side {self.short_side}, long side at most {self.max_side}"
        if self.resize == "center-crop":
            return f"the {self.image_size}x{self.image_size} center of a {self.short_side} short side"
        return f"whole images squashed to {self.image_size}x{self.image_size}"


def stored_geometry(dataset: DatasetSpec) -> StoredGeometry:
    """What the Spark job stores for `spec.dataset` (image_size: the short side of whole images)."""
    whole = dataset.resize == "whole"
    return StoredGeometry(
        resize=dataset.resize,
        image_size=dataset.crop_short_side if whole else dataset.image_size,
        short_side=dataset.crop_short_side if dataset.resize != "squash" else None,
        max_side=dataset.long_side_cap if whole else None,
    )


def geometry_mismatch(dataset: DatasetSpec, manifest: DataManifest, path: Path) -> str | None:
    """The one-line refusal of data stored otherwise than `spec.dataset` says, naming both;
    None when they agree or the manifest does not say."""
    stored, wanted = manifest.geometry, stored_geometry(dataset)
    if stored is None or stored == wanted:
        return None
    return f"spec.dataset asks for {wanted.describe()}, but {path} holds {stored.describe()}"


FAST_DCT_SCALES = (1, 2, 4)
"""n of the n/8 scales at which libjpeg-turbo decodes a JPEG both faster than at full size and
as well as an area mean (46-53 dB); 5/8 to 7/8 took longer than a full decode, and 3/8, 5/8
resampled worse (37 dB) (bench/RESULTS.md, "Scaled decode")."""


def dct_scale(needed: float) -> int:
    """n of the smallest fast n/8 decode scale that still gives `needed` of the source's size in
    each direction (the Spark job and the trainer both decode so), or 8: a full decode."""
    return next((n for n in FAST_DCT_SCALES if n / 8 >= needed), 8)


class DataManifest(_Model):
    version: int = MANIFEST_VERSION
    image_size: int = Field(
        ge=1,
        description="Side of the square images in the shards, or the short side of whole images, pixels.",
    )
    classes: list[ClassInfo]
    splits: dict[str, SplitInfo]
    shards: list[ShardInfo]
    skipped: list[SkippedFile] = Field(default_factory=list)
    mean: tuple[float, float, float] = Field(description="Per-channel mean of the train split, 0..1.")
    std: tuple[float, float, float] = Field(description="Per-channel std of the train split, 0..1.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="The settings used to make it.")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def geometry(self) -> StoredGeometry | None:
        """The stored geometry the parameters record; None for shards that do not say."""
        if self.parameters.get("resize") is None:
            return None
        fields = ("resize", "image_size", "short_side", "max_side")
        return StoredGeometry.model_validate({k: self.parameters.get(k) for k in fields})

    def shards_of(self, split: Split) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    @classmethod
    def load(cls, path: Path) -> DataManifest:
        return cls.model_validate_json(path.read_text())
