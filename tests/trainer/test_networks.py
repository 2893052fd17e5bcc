"""Any torchvision classification network: one of each family built as the trainer builds it,
masked, trained a step, pruned and rewound on a CPU at a small input; a non-ResNet network
through a whole level; one that cannot take the run's crop refused naming the fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from lth.api.networks import TORCHVISION_CLASSIFIERS
from lth.api.workload import EXIT_BAD_INPUT
from lth_trainer import pruning
from lth_trainer.cli import main
from lth_trainer.models import build_model, check_input, head_name
from lth_trainer.start import level_files
from tests.trainer.conftest import make_spec, trainer_args

FAMILIES = {
    "vgg11": "classifier.6",
    "resnet18": "fc",
    "mobilenet_v3_small": "classifier.3",
    "efficientnet_b0": "classifier.1",
    "convnext_tiny": "classifier.2",
    "vit_b_32": "heads.head",
}
"""One network per family, with the head the trainer finds for it."""


def test_the_api_lists_the_installed_torchvision_s_classification_networks() -> None:
    assert list(TORCHVISION_CLASSIFIERS) == torchvision.models.list_models(module=torchvision.models)


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, mask: pruning.Mask) -> None:
    """One training step of a batch of four 32 px images, pruned weights' gradients masked."""
    masked = pruning.gradient_masks(dict(model.named_parameters()), mask)
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if masked:  # as the trainer's step: a dense network has nothing to mask
        pruning.mask_gradients([w for w, _ in masked], [k for _, k in masked])
    optimizer.step()


@pytest.mark.parametrize("arch", FAMILIES)
def test_each_family_builds_masks_trains_prunes_and_rewinds_at_a_small_input(arch: str) -> None:
    """Level 0 of a search in miniature (32 px inputs, a ViT built for them, 3 classes): the
    dense network trains a step, 20 % of its weights are pruned by global magnitude (conv,
    linear and attention weights alike), it is rewound to theta_0 under the mask, and a step
    with momentum leaves every pruned weight at 0."""
    model = build_model(arch, 3, 32, seed=0)
    check_input(model, arch, 32)
    assert head_name(model) == FAMILIES[arch]
    theta_0 = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    params = dict(model.named_parameters())
    dense = pruning.full_mask(model, [])
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step(model, optimizer, dense)
    assert any(not torch.equal(params[n], theta_0[n]) for n in dense), "nothing trained"
    mask = pruning.prune_global_magnitude(dict(model.state_dict()), dense, 0.2)
    assert pruning.density(mask) == pytest.approx(0.8, abs=1e-6)
    model.load_state_dict(theta_0)  # rewind, under the mask
    with torch.no_grad():
        for name, keep in mask.items():
            params[name].mul_(keep)
    for name, keep in mask.items():
        assert torch.equal(params[name] * keep, theta_0[name] * keep)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):  # the second step with the momentum of the first
        step(model, optimizer, mask)
    assert all(torch.count_nonzero(params[n] * ~keep) == 0 for n, keep in mask.items()), (
        "a pruned weight moved"
    )


def test_a_mobilenet_trains_a_level_and_its_pruned_level(data_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(epochs=1, pruning={"rewindTo": "0"}, **{"batchSize": 40})
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"arch": "mobilenet_v3_small"})})
    for level in (0, 1):
        assert main(trainer_args(tmp_path, data_dir, spec, level)) == 0
    result = json.loads(level_files(tmp_path, 1).result.read_text())
    assert result["density"] == pytest.approx(0.8, abs=1e-3)
    assert 0 <= result["top1"] <= 100


def test_a_network_that_cannot_take_the_crop_is_refused_naming_the_fields(
    data_dir: Path, tmp_path: Path
) -> None:
    spec = make_spec(epochs=1)
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"arch": "vit_b_32"})})
    assert main(trainer_args(tmp_path, data_dir, spec, 0)) == EXIT_BAD_INPUT
    message = (tmp_path / "termination-0-main").read_text()
    assert "spec.model.arch: vit_b_32 cannot be built for 16 px crops (spec.training.cropSize)" in message
    assert not level_files(tmp_path, 0).mask.exists()  # refused before anything was written
