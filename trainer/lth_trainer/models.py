"""The networks, by spec.model.arch: smallcnn, or any of torchvision's classification networks
(`lth.api.networks`), built by torchvision's own registry with weights=None and the run's
class count. Nothing here is per family: the classifier head is found as the last linear (or
convolutional) module a network registers, and what the trainer prunes is the same rule for
every network (`lth_trainer.pruning.prunable_names`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lth.api.networks import SMALLCNN
from lth_trainer.store import TrainerError


class SmallCNN(nn.Module):
    """conv5x5x8-pool-conv5x5x16-pool-fc64-fc(classes): big enough to show a ticket on
    28x28 digits, small enough to train in seconds on a CPU."""

    def __init__(self, num_classes: int, crop_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5)  # no padding: 28 -> 24 -> 12 -> 8 -> 4
        self.conv2 = nn.Conv2d(8, 16, 5)
        self.pool = nn.MaxPool2d(2)
        side = ((crop_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(16 * side * side, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        logits: torch.Tensor = self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))
        return logits


OPTIONAL_ARGUMENTS = ("aux_logits", "image_size")
"""Builder arguments that only some torchvision networks take, set where they are: no auxiliary
classifiers (the trainer trains the logits alone; an unused head would leave weights without
gradients), and the input size the run crops to (a ViT's position embeddings are sized for it)."""


def torchvision_network(name: str, num_classes: int, crop_size: int) -> nn.Module:
    """torchvision's network `name` with weights=None and `num_classes` outputs, for crops of
    `crop_size` pixels; a network that cannot take that size is refused naming the fields."""
    import torchvision  # 4 s to import: only when a torchvision network is asked for

    builder = torchvision.models.get_model_builder(name)
    arguments: dict[str, Any] = {"aux_logits": False, "image_size": crop_size}
    while True:
        try:
            model: nn.Module = builder(weights=None, num_classes=num_classes, **arguments)
            return model
        except TypeError as error:  # "... got an unexpected keyword argument 'image_size'"
            unexpected = [key for key in arguments if f"'{key}'" in str(error)]
            if not unexpected:
                raise
            for key in unexpected:
                del arguments[key]
        except (AssertionError, ValueError) as error:
            raise TrainerError(
                f"spec.model.arch: {name} cannot be built for {crop_size} px crops "
                f"(spec.training.cropSize): {error}"
            ) from error


def build_model(arch: str, num_classes: int, crop_size: int, seed: int) -> nn.Module:
    """A freshly initialised network; the same seed gives the same weights."""
    torch.manual_seed(seed)
    if arch == SMALLCNN:
        return SmallCNN(num_classes, crop_size)
    return torchvision_network(arch, num_classes, crop_size)


def check_input(model: nn.Module, arch: str, crop_size: int) -> None:
    """One forward pass of two crops: a network that cannot take the run's crop (too small for
    its pooling, a fixed input size) is refused before anything is written, naming the fields."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, 3, crop_size, crop_size))
    except RuntimeError as error:
        raise TrainerError(
            f"spec.model.arch: {arch} does not take {crop_size} px crops (spec.training.cropSize): "
            f"{str(error).splitlines()[0]}"
        ) from error
    finally:
        model.train(training)


def head_name(model: nn.Module) -> str:
    """The classifier head's module: the last linear (or convolutional, as squeezenet's) module
    the network registers, the one that produces the logits (fc, classifier.6, heads.head...)."""
    names: list[str] = [
        name for name, module in model.named_modules() if isinstance(module, nn.Linear | nn.Conv2d)
    ]
    if not names:
        raise TrainerError("spec.model.arch: the network has no linear or convolutional layer for a head")
    return names[-1]
