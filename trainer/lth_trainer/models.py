"""The networks, looked up by spec.model.arch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


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


def _resnet(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, crop_size: int) -> nn.Module:
        import torchvision  # 4 s to import: only when a ResNet is asked for

        model: nn.Module = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        return model

    return build


@dataclass(frozen=True)
class Architecture:
    build: Callable[[int, int], nn.Module]
    """(num_classes, crop_size) -> a fresh network."""
    head: str
    """The classifier head's module name: what a transfer to other classes re-initialises."""


ARCHITECTURES: dict[str, Architecture] = {
    "smallcnn": Architecture(SmallCNN, "fc2"),
    "resnet18": Architecture(_resnet("resnet18"), "fc"),
    "resnet34": Architecture(_resnet("resnet34"), "fc"),
    "resnet50": Architecture(_resnet("resnet50"), "fc"),
}


def build_model(arch: str, num_classes: int, crop_size: int, seed: int) -> nn.Module:
    """A freshly initialised network; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return ARCHITECTURES[arch].build(num_classes, crop_size)


def head_name(arch: str) -> str:
    return ARCHITECTURES[arch].head
