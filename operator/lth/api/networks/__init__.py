"""spec.model: the network to prune, by name: smallcnn, or any of torchvision's classification
networks (its registry's names, kept as data in `torchvision_names`, so that the control plane,
which imports neither torch nor torchvision, validates them as the trainer will build them)."""

from __future__ import annotations

import difflib

from pydantic import Field, field_validator

from lth.api.networks.torchvision_names import TORCHVISION_CLASSIFIERS, TORCHVISION_VERSION
from lth.api.wire import ApiModel

SMALLCNN = "smallcnn"
ARCHITECTURES: tuple[str, ...] = (SMALLCNN, *TORCHVISION_CLASSIFIERS)
"""Every value spec.model.arch takes."""


def unknown_architecture(name: str) -> str:
    """Why `name` is refused: the close matches, or every name when none is close."""
    close = difflib.get_close_matches(name, ARCHITECTURES, n=5, cutoff=0.6)
    known = f"not smallcnn or a torchvision {TORCHVISION_VERSION} classification network"
    if close:
        return f"{name!r} is {known}; close matches: {', '.join(close)}"
    return f"{name!r} is {known}; one of: {', '.join(ARCHITECTURES)}"


class ModelSpec(ApiModel):
    """The network to prune."""

    arch: str = Field(
        "resnet50",
        json_schema_extra={"enum": list(ARCHITECTURES)},
        description=(
            "Any torchvision classification network by name (torchvision.models.list_models: "
            "resnet50, vgg16, mobilenet_v3_large, efficientnet_b0, convnext_tiny, vit_b_16, ...), "
            "built with weights=None and the run's class count; or smallcnn "
            "(conv5x5x8-pool-conv5x5x16-pool-fc64-fc) for tiny data. Its conv and linear weights "
            "(attention's input projections included) are pruned, but for spec.pruning.ignoreLayers."
        ),
    )
    num_classes: int | None = Field(
        None, ge=2, le=1_000_000, description="Output classes; taken from the data's manifest when absent."
    )

    @field_validator("arch")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(unknown_architecture(value))
        return value
