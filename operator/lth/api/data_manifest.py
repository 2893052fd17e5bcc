"""The contract between the Spark job and the trainer: `data/manifest.json`.

The Spark job writes shards in WebDataset layout (`<split>-NNNNN.tar`, members
`<key>.jpg` and `<key>.cls` holding the class index as text) and this manifest
last, atomically: a data directory with a manifest is complete. Like lth.api,
this module needs only pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MANIFEST_VERSION = 1

Split = Literal["train", "val", "test"]


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


class DataManifest(_Model):
    version: int = MANIFEST_VERSION
    image_size: int = Field(ge=1, description="Side of the square images in the shards, pixels.")
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

    def shards_of(self, split: Split) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    @classmethod
    def load(cls, path: Path) -> DataManifest:
        return cls.model_validate_json(path.read_text())
