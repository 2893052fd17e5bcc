"""The data: what `spec.dataset` asks for, and the contract between the Spark job and the
trainer, `data/manifest.json`, which records what was stored.

The Spark job writes shards in WebDataset layout (`<split>-NNNNN.tar`, members
`<key>.jpg` and `<key>.cls` holding the class index as text) and this manifest
last, atomically: a data directory with a manifest is complete. Like lth.api,
this module needs only pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lth.api.wire import ApiModel

DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
"""spec.dataset.maxImagePixels' default: 64 Mpx, 256 MiB decoded (RGBX)."""


class DatasetSpec(ApiModel):
    """Where the images come from and what size the trainer sees."""

    format: Literal["imagenet", "imagefolder", "prepared"] = Field(
        "imagenet",
        description=(
            "imagenet: the ILSVRC-2012 archives as downloaded (train tar of per-class tars, "
            "val tar, devkit); imagefolder: a tree with one folder per class; "
            "prepared: the data/ directory (shards + manifest.json) of an earlier run, "
            "which skips preprocessing."
        ),
    )
    path: str = Field(
        min_length=1,
        description="Where the input is: an absolute path, or relative to the storage root.",
    )
    image_size: int = Field(
        256,
        ge=16,
        le=1024,
        description=(
            "Side of the square images written to the shards (squash, center-crop), pixels; the "
            "short side's default for whole. The default keeps the 256 x 256 center of a short side "
            "of 256, from which training takes random 224 crops and evaluation the 224 center."
        ),
    )
    resize: Literal["squash", "center-crop", "whole"] = Field(
        "center-crop",
        description=(
            "whole: resize the short side to shortSide, aspect kept and the long side at most "
            "maxSide, and store the whole image (torchvision's ImageNet protocol: random crops "
            "from all of it); center-crop: resize the short side to shortSide, then keep the "
            "imageSize x imageSize center; squash: resize the whole image to imageSize x imageSize "
            "(aspect not kept)."
        ),
    )
    short_side: int | None = Field(
        None,
        ge=16,
        le=2048,
        description="Short side of the resized image (center-crop, whole), pixels (default imageSize).",
    )
    max_side: int | None = Field(
        None,
        ge=16,
        le=4096,
        description=(
            "Longest side of a whole stored image, pixels (default twice the short side): a "
            "panorama is resized until its long side fits, its short side then below shortSide."
        ),
    )
    classes: list[str] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="Only these classes (WordNet ids or folder names); all when absent.",
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        ge=1 << 12,
        le=1 << 30,
        description=(
            "Largest image decoded, width x height: an input image whose header declares more is "
            "skipped and listed in the manifest, never decoded (a 1 KB file can declare 30000 x 30000), "
            "and the trainer refuses a shard image over it. Default 8192 x 8192, far above ImageNet's "
            "photos; decoding one takes 256 MiB."
        ),
    )

    @property
    def crop_short_side(self) -> int:
        return self.short_side or self.image_size

    @property
    def long_side_cap(self) -> int:
        """The long side's limit of whole stored images."""
        return self.max_side or 2 * self.crop_short_side


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
    path: str = Field(
        min_length=1, max_length=255, description="File name in the data directory (no folders)."
    )
    images: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        """A shard is a file of the data directory itself: a manifest of `prepared` data (which
        may come from anyone) must not make the trainer read ../../anything or /etc/anything."""
        if any(c in value for c in "/\\\0") or value.startswith("."):
            raise ValueError(f"{value!r} is not a plain file name in the data directory")
        return value


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
