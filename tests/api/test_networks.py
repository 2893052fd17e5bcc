"""spec.model.arch: any torchvision classification network by name, validated without torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.api.crd import crd
from lth.api.networks import ARCHITECTURES
from lth.api.validation import check_run
from lth.cli import main


def document(arch: str, **model: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lth.dev/v1alpha1",
        "kind": "LotteryTicketRun",
        "metadata": {"name": "net"},
        "spec": {"dataset": {"path": "imagenet"}, "model": {"arch": arch, **model}},
    }


@pytest.mark.parametrize(
    "arch", ["vgg16", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_b_16"]
)
def test_torchvision_networks_are_accepted(arch: str) -> None:
    run, problems = check_run(document(arch))
    assert problems == [] and run is not None and run.spec.model.arch == arch


def test_an_unknown_name_is_refused_with_the_close_matches() -> None:
    _, problems = check_run(document("resnet51"))
    assert [p.path for p in problems] == ["spec.model.arch"]
    assert "'resnet51' is not smallcnn or a torchvision 0.29.1 classification network" in problems[0].message
    assert "close matches: resnet50" in problems[0].message


def test_a_name_with_no_close_match_is_refused_with_every_name() -> None:
    _, problems = check_run(document("transformer"))
    assert "one of: smallcnn, alexnet, convnext_base" in problems[0].message
    assert all(name in problems[0].message for name in ARCHITECTURES)


def test_the_crd_lists_the_names() -> None:
    model = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "model"
    ]
    assert model["properties"]["arch"]["enum"] == list(ARCHITECTURES)


def test_lth_validate_lists_the_prunable_weights_of_a_vit(tmp_path: Path) -> None:
    path = tmp_path / "vit.yaml"
    path.write_text(yaml.safe_dump(document("vit_b_16", numClasses=10) | {}))
    done = subprocess.run(
        [sys.executable, "-m", "lth", "validate", str(path), "--list-prunable"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in line for line in lines)
    head = next(line for line in lines if "heads.head.weight" in line)
    assert "10x768" in head and "(classifier head)" in head
    assert "vit_b_16: 50 prunable weights" in lines[-2] and lines[-1] == f"{path}: valid"


def test_lth_validate_says_when_it_cannot_list_the_weights_without_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(document("resnet50")))
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else found(name, *a)
    )
    assert main(["validate", str(path), "--list-prunable"]) == 0
    out = capsys.readouterr().out
    assert "--list-prunable builds the network with torch, which is not installed here" in out


def test_lth_validate_refuses_ignore_layers_that_name_nothing_in_the_network(tmp_path: Path) -> None:
    path = tmp_path / "convnext.yaml"
    run = document("convnext_tiny", numClasses=10)
    run["spec"]["pruning"] = {"ignoreLayers": ["conv1"]}  # a ResNet's first conv, copied over
    path.write_text(yaml.safe_dump(run))
    done = subprocess.run(
        [sys.executable, "-m", "lth", "validate", str(path), "--list-prunable"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and f"{path}: valid" not in done.stdout
    assert "spec.pruning.ignoreLayers: 'conv1' keeps none of the prunable weights of ConvNeXt" in done.stderr
