"""The pure parts: pruning rules, schedule, crops, batch split across ranks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from torch import nn

from lth.api.networks import ARCHITECTURES
from lth_trainer import pruning, store
from lth_trainer.data import index as shard_index
from lth_trainer.data import loader
from lth_trainer.data.device import Inputs
from lth_trainer.data.index import scan_tar
from lth_trainer.data.loader import TrainBatches, eval_batches
from lth_trainer.models import build_model, head_name
from lth_trainer.optim import build_optimizer, lr_factor
from tests.trainer.conftest import make_spec


def test_prunable_weights_are_conv_and_linear_weights_minus_ignored_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert pruning.prunable_names(model, []) == ["0.weight", "3.weight"]
    assert pruning.prunable_names(model, ["3"]) == ["0.weight"]
    resnet_like = build_model("smallcnn", 10, 28, 0)
    assert pruning.prunable_names(resnet_like, ["fc*"]) == ["conv1.weight", "conv2.weight"]


def test_ignore_layers_names_weights_or_whole_modules_and_refuses_what_names_nothing() -> None:
    model = build_model("resnet18", 10, 32, 0)
    every = pruning.prunable_names(model, [])
    assert set(every) - set(pruning.prunable_names(model, ["layer1"])) == {
        name for name in every if name.startswith("layer1.")
    }  # a module keeps all it holds
    assert set(every) - set(pruning.prunable_names(model, ["layer2.0.conv1.weight", "fc"])) == {
        "layer2.0.conv1.weight",
        "fc.weight",
    }  # a weight as --list-prunable prints it
    with pytest.raises(store.TrainerError) as refused:
        pruning.prunable_names(model, ["conv1", "features.*.block.1", "bn1"])
    message = str(refused.value)
    assert message.startswith("spec.pruning.ignoreLayers: 'features.*.block.1', 'bn1' keeps none of")
    assert "its top-level modules: conv1, fc, layer1, layer2, layer3, layer4" in message


def test_every_architecture_has_a_classifier_head_for_the_run_s_classes() -> None:
    """Found by one rule for every network (the last linear or conv module): fc, classifier.6,
    heads.head, squeezenet's classifier.1 conv, each with the run's 7 outputs."""
    heads = {}
    for arch in ARCHITECTURES:
        try:
            with torch.device("meta"):  # shapes only: no init cost
                model = build_model(arch, 7, 224, 0)
        except NotImplementedError:  # RegNet's builder computes its widths with tensors
            if not arch.endswith("400mf"):
                continue  # the larger RegNets (up to 644M weights) would cost gigabytes here
            model = build_model(arch, 7, 224, 0)
        head = model.get_submodule(head_name(model))
        outputs = head.out_features if isinstance(head, nn.Linear) else head.out_channels
        assert outputs == 7, arch
        heads[arch] = head_name(model)
    assert (heads["smallcnn"], heads["resnet50"], heads["vgg16"], heads["vit_b_16"]) == (
        "fc2",
        "fc",
        "classifier.6",
        "heads.head",
    )
    assert heads["squeezenet1_1"] == "classifier.1" and heads["convnext_tiny"] == "classifier.2"
    assert heads["regnet_y_400mf"] == "fc" and len(heads) == len(ARCHITECTURES) - 13


def test_global_magnitude_removes_the_fraction_of_remaining_smallest_weights_across_layers() -> None:
    weights = {"a": torch.tensor([0.1, -5.0, 0.2, 3.0]), "b": torch.tensor([[-0.05, 4.0], [0.3, 2.0]])}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    first = pruning.prune_global_magnitude(weights, mask, 0.25)  # 8 kept -> remove 2: -0.05, 0.1
    assert first["a"].tolist() == [False, True, True, True]
    assert first["b"].tolist() == [[False, True], [True, True]]
    second = pruning.prune_global_magnitude(weights, first, 0.5)  # 6 kept -> remove 3: 0.2, 0.3, 2.0
    assert second["a"].tolist() == [False, True, False, True]
    assert second["b"].tolist() == [[False, True], [False, False]]


def test_density_after_levels_is_geometric_and_masks_nest() -> None:
    model = build_model("smallcnn", 10, 28, 0)
    weights = dict(model.state_dict())
    mask = pruning.full_mask(model, [])
    total = pruning.size(mask)
    for level in range(1, 11):
        new = pruning.prune_global_magnitude(weights, mask, 0.2)
        assert all(not (new[n] & ~mask[n]).any() for n in mask)  # nested
        assert abs(pruning.kept(new) - total * 0.8**level) <= len(mask)  # one weight per layer group
        mask = new


def test_random_prune_mask_keeps_each_layers_count_but_not_its_positions() -> None:
    model = build_model("smallcnn", 10, 28, 0)
    weights = dict(model.state_dict())
    mask = pruning.prune_global_magnitude(weights, pruning.full_mask(model, []), 0.6)
    rand = pruning.random_like(mask, torch.Generator().manual_seed(1))
    assert {n: int(m.sum()) for n, m in rand.items()} == {n: int(m.sum()) for n, m in mask.items()}
    assert any(not torch.equal(rand[n], mask[n]) for n in mask)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_with_momentum_and_weight_decay(optimizer: str) -> None:
    spec = make_spec(optimizer=optimizer, momentum=0.9, nesterov=True, weightDecay=0.1, lr=0.1)
    model = build_model("smallcnn", 4, 16, 0)
    mask = pruning.random_like(pruning.full_mask(model, []), torch.Generator().manual_seed(0))
    mask = {n: m & (torch.rand(m.shape) < 0.5) for n, m in mask.items()}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, keep in mask.items():
            params[n].mul_(keep)
    opt = build_optimizer(spec.training, model)
    for _ in range(5):
        loss = model(torch.randn(8, 3, 16, 16)).square().mean()
        opt.zero_grad()
        loss.backward()
        pruning.mask_gradients([params[n] for n in mask], [m.float() for m in mask.values()])
        opt.step()
    for n, keep in mask.items():
        assert params[n][~keep].abs().max() == 0
        assert params[n][keep].abs().min() > 0


def test_schedules_warm_up_linearly_then_follow_the_spec() -> None:
    step = make_spec(epochs=10, schedule="step", milestones=[4, 8], gamma=0.1, warmupEpochs=2).training
    assert lr_factor(step, 0, 10) == pytest.approx(0.05)
    assert lr_factor(step, 19, 10) == pytest.approx(1.0)
    assert lr_factor(step, 39, 10) == pytest.approx(1.0)
    assert lr_factor(step, 40, 10) == pytest.approx(0.1)
    assert lr_factor(step, 85, 10) == pytest.approx(0.01)
    cosine = make_spec(epochs=10, schedule="cosine", milestones=[], warmupEpochs=0).training
    assert lr_factor(cosine, 0, 10) == pytest.approx(1.0)
    assert lr_factor(cosine, 50, 10) == pytest.approx(0.5)
    assert lr_factor(cosine, 99, 10) < 0.001


def test_ranks_split_every_global_batch_without_overlap_for_any_world_size() -> None:
    single = list(TrainBatches(50, 8, 0, 1, seed=3).from_step(0, 2))
    pairs = [list(TrainBatches(50, 8, r, 2, seed=3).from_step(0, 2)) for r in range(2)]
    assert len(single) == 2 * (50 // 8)
    for b, batch in enumerate(single):
        assert pairs[0][b] + pairs[1][b] == batch
    assert single[0] != single[6]  # a new order each epoch
    assert list(TrainBatches(50, 8, 0, 1, seed=3).from_step(9, 2)) == single[9:]  # resume mid-epoch
    shares = [i for r in range(3) for batch in eval_batches(10, 2, r, 3) for _, i in batch]
    assert sorted(shares) == list(range(10))


@pytest.mark.parametrize(("pods", "gpus"), [(1, 4), (2, 4), (8, 4)])
def test_every_rank_has_the_same_steps_per_epoch(pods: int, gpus: int) -> None:
    """A rank that runs out of batches first would hang the epoch's last all-reduce: at any
    world size every rank takes samples // batch steps of batch / world images (the tail that
    fills no global batch is dropped for all), covering each global batch exactly once. Eval
    needs no such rule: it runs the bare model, no collective until the one sum at the end."""
    world, batch, samples = pods * gpus, 64, 64 * 7 + 61  # 7 steps and a tail of 61
    ranks = [list(TrainBatches(samples, batch, r, world, seed=1).from_step(0, 2)) for r in range(world)]
    assert {len(steps) for steps in ranks} == {2 * 7}
    assert {len(b) for steps in ranks for b in steps} == {batch // world}
    single = list(TrainBatches(samples, batch, 0, 1, seed=1).from_step(0, 2))
    for step, whole in enumerate(single):
        assert [i for steps in ranks for i in steps[step]] == whole
    assert TrainBatches(samples, batch, world - 1, world, seed=1).steps_per_epoch == 7


def test_device_crop_of_the_whole_image_is_the_image_and_flip_mirrors_it() -> None:
    images = torch.randint(0, 256, (2, 6, 8, 3), dtype=torch.uint8)
    inputs = Inputs((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), torch.device("cpu"), crop=6)
    plain = images.permute(0, 3, 1, 2).float()
    whole = torch.tensor([[0, 0, 6, 8, 0], [0, 0, 6, 8, 1]], dtype=torch.float32)
    resized = inputs(images, whole)  # 6x8 -> 6x6: columns resampled, rows exact
    assert resized.shape == (2, 3, 6, 6)
    square = torch.tensor([[0, 1, 6, 6, 0], [0, 1, 6, 6, 1]], dtype=torch.float32)
    cropped = inputs(images, square)
    assert torch.allclose(cropped[0], plain[0, :, :, 1:7], atol=1e-4)
    assert torch.allclose(cropped[1], plain[1, :, :, 1:7].flip(2), atol=1e-4)
    assert torch.equal(inputs(images[:, :, 1:7], torch.zeros(2, 0)), plain[:, :, :, 1:7])


def _tar(path: Path, members: dict[str, bytes], tar_format: int = tarfile.USTAR_FORMAT) -> Path:
    with tarfile.open(path, "w", format=tar_format) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_scan_tar_reads_what_tarfile_reads(tmp_path: Path) -> None:
    short = {"a/0001.jpg": b"\xff\xd8" * 700, "a/0001.cls": b"3\n"}
    cases = [
        _tar(tmp_path / "ustar.tar", short),  # read from the headers directly
        _tar(tmp_path / "gnu.tar", {**short, "b" * 120 + ".cls": b"1"}, tarfile.GNU_FORMAT),  # long name
    ]
    for path in cases:
        with tarfile.open(path) as tar:
            expected = [(m.name, m.offset_data, m.size, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
        assert [(name, offset, size, content()) for name, offset, size, content in scan_tar(path)] == expected


def test_scan_tar_refuses_a_corrupt_header(tmp_path: Path) -> None:
    path = _tar(tmp_path / "shard.tar", {"x.cls": b"1"})
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # a name byte changes, the checksum no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(tarfile.TarError, match="checksum"):
        list(scan_tar(path))


def _general(path: Path) -> tuple[list[int], list[int], list[int]]:
    """(offsets, sizes, labels) of the .jpg members by key, read with tarfile."""
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar}
        keys = sorted(name[:-4] for name in members if name.endswith(".jpg"))
        labels = [int(tar.extractfile(members[k + ".cls"]).read().decode().strip()) for k in keys]  # type: ignore[union-attr]
    return [members[k + ".jpg"].offset_data for k in keys], [members[k + ".jpg"].size for k in keys], labels


def test_scan_shard_reads_what_tarfile_reads_in_key_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The columnar scan that indexes ImageNet's 1.3 M train images in seconds (a header per
    image in Python took minutes of a level's start) gives what tarfile gives, sorted by key
    (k-x sorts after k, though k-x.jpg sorts before k.jpg), in a shard cut into header chunks."""
    members = {}
    for n, key in enumerate(["k", "k-x", "k_1", "b/0002", "b/0001", "z" * 90]):
        members[f"{key}.jpg"] = bytes([n]) * (100 + 700 * n)
        members[f"{key}.cls"] = str(7 * n + 3).encode() + (b"\n" if n == 2 else b"")
    monkeypatch.setattr(shard_index, "HEADER_ROWS", 4)
    for tar_format in (tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = _tar(tmp_path / f"{tar_format}.tar", members, tar_format)
        shard = shard_index.scan_shard(path)
        assert (shard.offset.tolist(), shard.size.tolist(), shard.label.tolist()) == _general(path)
    long = _tar(
        tmp_path / "long.tar",
        {**members, "y" * 120 + ".jpg": b"1", "y" * 120 + ".cls": b"1"},
        tarfile.PAX_FORMAT,
    )
    shard = shard_index.scan_shard(long)  # a pax header: the general path
    assert (shard.offset.tolist(), shard.size.tolist(), shard.label.tolist()) == _general(long)


def test_scan_shard_refuses_a_corrupt_header_and_a_missing_label(tmp_path: Path) -> None:
    path = _tar(tmp_path / "shard.tar", {"x.jpg": b"1", "x.cls": b"1"})
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(tarfile.TarError, match="checksum"):
        shard_index.scan_shard(path)
    with pytest.raises(ValueError, match="1 images and 0 labels"):
        shard_index.scan_shard(_tar(tmp_path / "other.tar", {"x.jpg": b"1", "y.txt": b"1"}))


def test_a_batch_is_fetched_at_once_with_the_crops_of_its_samples(data_dir: Path) -> None:
    """The loader fetches a whole batch (decode each JPEG, draw all crop boxes at once: a
    seeded random.Random per sample cost more than decoding a small image); a sample's crop
    depends on (seed, epoch, index) only, so any batch, rank or worker gives the same."""
    manifest = shard_index.load_manifest(data_dir)
    index = shard_index.index_split(data_dir, manifest, "train")
    dataset = loader.ShardDataset(index, 12, augment=True, seed=5)
    inputs = Inputs((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), torch.device("cpu"), crop=12)
    items = [(0, 7), (0, 3), (1, 7), (0, 100)]
    batch = dataset.__getitems__(items)
    crops = inputs(torch.from_numpy(batch.images), torch.from_numpy(batch.boxes))
    assert crops.shape == (4, 3, 12, 12) and batch.boxes.shape == (4, 5)
    for row, item in enumerate(items):
        image, label, box = dataset[item]
        alone = inputs(torch.from_numpy(image[None]), torch.from_numpy(box[None]))
        assert torch.allclose(alone[0], crops[row], atol=1e-3) and label == batch.labels[row]
    assert not torch.allclose(crops[0], crops[2])  # a new draw each epoch
    whole = dataset.__getitems__([(0, i) for i in range(len(index))])
    top, left, h, w, flip = whole.boxes.T
    assert (top >= 0).all() and (top < 1).all() and (left >= 0).all() and (left < 1).all()
    assert (top + h <= whole.images.shape[1] - 1).all() and (left + w <= whole.images.shape[2] - 1).all()
    assert 0.3 < flip.mean() < 0.7
    images, labels, boxes = loader.collate(
        loader.ShardDataset(index, 12, augment=False, seed=5).__getitems__(items)
    )
    assert images.shape == (4, 12, 12, 3) and boxes.shape == (4, 0) and labels.dtype == torch.int64
    full = loader.ShardDataset(index, 16, augment=False, seed=5).__getitems__(items).images
    assert (images[1].numpy() == full[1, 2:14, 2:14]).all()  # the center crop


def test_gradient_masks_have_the_strides_of_channels_last_gradients() -> None:
    """On GPU the weights are channels_last; a contiguous mask would make the fused multiply
    fall back to one kernel per tensor. The masks take the weights' (= gradients') layout."""
    model = build_model("resnet18", 4, 32, 0).to(memory_format=torch.channels_last)
    full = pruning.full_mask(model, [])
    mask = pruning.random_like(pruning.prune_global_magnitude(dict(model.state_dict()), full, 0.8),
                               torch.Generator().manual_seed(0))  # fmt: skip
    pairs = pruning.gradient_masks(dict(model.named_parameters()), mask)
    model(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)).sum().backward()
    assert len(pairs) == len(mask)
    assert any(w.dim() == 4 and not w.is_contiguous() for w, _ in pairs)  # channels_last weights
    for weight, keep in pairs:
        assert weight.grad is not None and keep.stride() == weight.grad.stride()
    pruning.mask_gradients([w for w, _ in pairs], [k for _, k in pairs])
    for weight, keep in pairs:
        assert weight.grad is not None and not weight.grad[keep == 0].any()


def test_every_pruning_strategy_the_api_allows_is_registered() -> None:
    from typing import get_args

    from lth.api import PruningSpec
    from lth_trainer.pruning import STRATEGIES

    allowed = get_args(PruningSpec.model_fields["strategy"].annotation)
    assert set(allowed) == set(STRATEGIES)


@pytest.mark.parametrize("odd_size", [12, 20])
def test_an_image_of_another_size_in_a_batch_is_refused_naming_its_shard(
    tmp_path: Path, odd_size: int
) -> None:
    """Each image is decoded straight into the batch's row; one that is smaller or larger than
    the batch's first is bad input, named, not a crash or a silently cropped row."""
    from tests.trainer.shards import pattern_images, write_shards

    samples = pattern_images(2, 4, 16, seed=1)
    samples[2] = (pattern_images(2, 1, odd_size, seed=2)[0][0], samples[2][1])
    write_shards(tmp_path, {"train": samples, "val": samples}, classes=2, per_shard=4)
    index = shard_index.index_split(tmp_path, shard_index.load_manifest(tmp_path), "train")
    dataset = loader.ShardDataset(index, 12, augment=True, seed=0)
    with pytest.raises(
        store.TrainerError, match=rf"train-00000.tar: a {odd_size}x{odd_size} image among 16x16"
    ):
        dataset.__getitems__([(0, 0), (0, 1), (0, 2), (0, 3)])
