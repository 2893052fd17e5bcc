"""The evaluation protocol: which crop the network sees, from what the manifest says was stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from lth.api.data_manifest import DataManifest
from lth.api.workload import EXIT_BAD_INPUT
from lth_trainer.cli import main
from lth_trainer.data.crops import default_crop
from lth_trainer.data.index import index_split, load_manifest
from lth_trainer.data.loader import ShardDataset
from lth_trainer.start import level_files
from tests.trainer.conftest import make_spec, trainer_args
from tests.trainer.shards import pattern_images, write_shards

CENTER_CROP = {"image_size": 32, "resize": "center-crop", "short_side": 32}
"""What the Spark job records for the default protocol, at 32 px instead of 256."""


@pytest.fixture(scope="module")
def stored_32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 x 32 centers of a 32 px short side, as the default dataset spec stores them (256 at scale)."""
    path = tmp_path_factory.mktemp("data32")
    splits = {"train": pattern_images(4, 120, 32, 0), "val": pattern_images(4, 40, 32, 1)}
    write_shards(path, splits, 4, 100, parameters=CENTER_CROP)
    return path


def test_default_crop_is_the_center_seven_eighths_of_the_stored_short_side(stored_32: Path) -> None:
    manifest = load_manifest(stored_32)
    assert default_crop(manifest) == 28  # 224 of 256 at ImageNet scale
    squashed = manifest.model_copy(update={"parameters": {"resize": "squash", "image_size": 32}})
    assert default_crop(squashed) == 32  # the seed's squash: the whole image
    assert default_crop(manifest.model_copy(update={"parameters": {}})) == 32  # shards that do not say
    stored_eval_crop = {"resize": "center-crop", "short_side": 256, "image_size": 224}
    at_scale = DataManifest.model_validate({**manifest.model_dump(), "image_size": 224})
    assert default_crop(at_scale.model_copy(update={"parameters": stored_eval_crop})) == 224


def test_evaluation_sees_the_center_crop_of_the_stored_image(stored_32: Path, tmp_path: Path) -> None:
    spec = make_spec(
        epochs=1, pruning={"rewindTo": "0"}, dataset={"imageSize": 32}
    )  # no cropSize: the default
    assert main(trainer_args(tmp_path, stored_32, spec, 0)) == 0
    start = json.loads(level_files(tmp_path, 0).start.read_text())
    assert start["crop"] == 28 and start["evaluation"] == "center 28 of the 32 px stored images"
    final = load_file(str(level_files(tmp_path, 0).final))
    assert final["fc1.weight"].shape[1] == 16 * 4 * 4  # smallcnn at 28 px (32 px would give 5 x 5)

    manifest = load_manifest(stored_32)
    val = ShardDataset(index_split(stored_32, manifest, "val"), 28, False, 0)
    image, _, box = val[(0, 3)]
    whole = ShardDataset(index_split(stored_32, manifest, "val"), 32, False, 0)[(0, 3)][0]
    assert image.shape == (28, 28, 3) and box.size == 0
    assert np.array_equal(image, whole[2:30, 2:30])


def test_a_crop_the_stored_images_cannot_give_is_refused_before_training(
    data_dir: Path, tmp_path: Path
) -> None:
    spec = make_spec(cropSize=20, augmentation="random-resized-crop")  # the data is 16 px
    assert main(trainer_args(tmp_path, data_dir, spec, 0)) == EXIT_BAD_INPUT
    message = (tmp_path / "termination-0-main").read_text()
    assert "spec.training.cropSize: 20" in message and str(data_dir / "manifest.json") in message
    files = level_files(tmp_path, 0)
    assert not any(p.exists() for p in (files.mask, files.init, files.start, files.checkpoint))
    assert not (tmp_path / "index").exists()  # not even the shard index


def test_data_stored_otherwise_than_the_spec_says_is_refused_naming_both(
    stored_32: Path, tmp_path: Path
) -> None:
    spec = make_spec(epochs=1, dataset={"imageSize": 32, "resize": "whole"})
    assert main(trainer_args(tmp_path, stored_32, spec, 0)) == EXIT_BAD_INPUT
    message = (tmp_path / "termination-0-main").read_text()
    assert "spec.dataset asks for whole images, short side 32, long side at most 64" in message
    assert f"{stored_32 / 'manifest.json'} holds the 32x32 center of a 32 short side" in message
    assert not level_files(tmp_path, 0).start.exists() and not (tmp_path / "index").exists()


def test_a_level_trains_on_whole_stored_images_and_says_how_it_evaluates(tmp_path: Path) -> None:
    from tests.trainer.test_crops import WHOLE, whole_images

    data = tmp_path / "data"
    write_shards(data, {"train": whole_images(40, 0), "val": whole_images(12, 1)}, 4, 20, parameters=WHOLE)
    spec = make_spec(epochs=1, pruning={"rewindTo": "0"}, dataset={"imageSize": 32, "resize": "whole"})
    assert main(trainer_args(tmp_path, data, spec, 0)) == 0
    start = json.loads(level_files(tmp_path, 0).start.read_text())
    assert start["crop"] == 28
    assert start["evaluation"] == (
        "center 28 of each image resized to a short side of 32, from whole images of short side 32"
    )
    assert json.loads(level_files(tmp_path, 0).result.read_text())["top1"] is not None
