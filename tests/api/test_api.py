"""The API models and `lth validate`: what a user writing run.yaml meets."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.api import LotteryTicketRun, PruningSpec, RunSpec
from lth.api.validation import check_run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

MINIMAL: dict[str, Any] = {
    "apiVersion": "lth.dev/v1alpha1",
    "kind": "LotteryTicketRun",
    "metadata": {"name": "r50"},
    "spec": {"dataset": {"path": "imagenet"}},
}


def with_change(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """MINIMAL with `value` set at a dotted path (`spec.training.epochs`)."""
    doc = copy.deepcopy(base or MINIMAL)
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return doc


def test_defaults_are_the_reference_setup() -> None:
    spec = RunSpec.model_validate({"dataset": {"path": "imagenet"}})
    assert spec.dataset.format == "imagenet" and spec.dataset.image_size == 256
    # torchvision's protocol: the 256 x 256 center of a 256 short side is stored; training takes
    # random crops of it, evaluation the center 224 (the trainer's default crop, from the manifest)
    assert spec.dataset.resize == "center-crop" and spec.dataset.crop_short_side == 256
    assert spec.training.crop_size is None
    assert spec.pruning.fraction == 0.2 and spec.pruning.rewind_to == "6ep"
    assert spec.resources.gpus_per_pod == 4 and spec.resources.pods == 1
    assert spec.training.precision == "bf16" and spec.training.milestones == [30, 60, 80]


def test_wire_form_is_camel_case_and_round_trips() -> None:
    spec = RunSpec.model_validate(
        {"dataset": {"path": "x", "imageSize": 224}, "pruning": {"rewindTo": "500it"}}
    )
    wire = spec.to_wire()
    assert wire["dataset"]["imageSize"] == 224 and "image_size" not in wire["dataset"]
    assert wire["pruning"]["rewindTo"] == "500it"
    assert RunSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("level", "density"), [(0, 1.0), (1, 0.8), (7, 0.2097152), (10, 0.1073741824), (13, 0.0549755813888)]
)
def test_density_is_one_minus_fraction_to_the_level(level: int, density: float) -> None:
    assert PruningSpec().density(level) == pytest.approx(density, rel=1e-12)


@pytest.mark.parametrize(
    ("target", "levels"), [(1.0, 0), (0.8, 1), (0.21, 7), (0.108, 10), (0.107, 11), (0.06, 13)]
)
def test_levels_to_reach_a_density(target: float, levels: int) -> None:
    pruning = PruningSpec()
    assert pruning.levels_to_reach(target) == levels
    assert pruning.density(levels) <= target < pruning.density(levels - 1) if levels else True


def test_rewind_point_parses_units() -> None:
    assert PruningSpec(rewind_to="6ep").rewind_point() == (6, "ep")
    assert PruningSpec(rewind_to="500it").rewind_point() == (500, "it")
    assert PruningSpec(rewind_to="0").rewind_point() == (0, "it")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    run, problems = check_run(yaml.safe_load(example.read_text()))
    assert problems == []
    assert isinstance(run, LotteryTicketRun)


def test_resnet50_example_is_the_reference_setup() -> None:
    run = LotteryTicketRun.model_validate(
        yaml.safe_load((ROOT / "examples/imagenet-resnet50.yaml").read_text())
    )
    spec = run.spec
    assert (spec.model.arch, spec.training.epochs, spec.pruning.rewind_to) == ("resnet50", 90, "6ep")
    assert (spec.pruning.fraction, spec.pruning.levels, spec.resources.gpus_per_pod) == (0.2, 10, 4)
    assert spec.dataset.format == "imagenet"


def test_resnet50_example_needs_no_optional_add_on() -> None:
    """Kueue (queueName), GPU Feature Discovery labels (nodeSelector) and a PriorityClass are
    shown commented out: a cluster without them would never start the jobs."""
    text = (ROOT / "examples/imagenet-resnet50.yaml").read_text()
    resources = LotteryTicketRun.model_validate(yaml.safe_load(text)).spec.resources
    assert resources.queue_name is None and resources.priority_class_name is None
    assert resources.node_selector == {}
    for field in ("nodeSelector:", "queueName:", "priorityClassName:"):
        assert f"    # {field}" in text, f"the example should show {field} commented out"


# Each broken spec, the field path the message must name, and whether the CRD's
# schema alone can refuse it (the rest is for `lth validate` and the operator).
BROKEN: list[tuple[str, dict[str, Any], str, bool]] = [
    ("no dataset", {**MINIMAL, "spec": {}}, "spec.dataset", True),
    ("empty path", with_change("spec.dataset.path", ""), "spec.dataset.path", True),
    ("epochs not a number", with_change("spec.training.epochs", "ninety"), "spec.training.epochs", True),
    ("unknown field", with_change("spec.training.epochz", 3), "spec.training.epochz", False),
    ("fraction above 1", with_change("spec.pruning.fraction", 1.5), "spec.pruning.fraction", True),
    ("fraction zero", with_change("spec.pruning.fraction", 0), "spec.pruning.fraction", True),
    ("unknown architecture", with_change("spec.model.arch", "vgg17"), "spec.model.arch", True),
    ("dataset format", with_change("spec.dataset.format", "tfrecord"), "spec.dataset.format", True),
    ("rewind notation", with_change("spec.pruning.rewindTo", "6 epochs"), "spec.pruning.rewindTo", True),
    ("rewind after training", with_change("spec.pruning.rewindTo", "95ep"), "spec.pruning.rewindTo", False),
    (
        "unreachable target density",
        with_change("spec.pruning.stop", {"targetDensity": 0.01}),
        "spec.pruning.stop.targetDensity",
        False,
    ),
    (
        "batch not divisible by processes",
        with_change("spec.resources", {"gpusPerPod": 4, "pods": 3}),
        "spec.training.batchSize",
        False,
    ),
    ("name too long", with_change("metadata.name", "r" * 50), "metadata.name", False),
    ("name not DNS-1035", with_change("metadata.name", "ResNet_50"), "metadata.name", False),
    (
        "milestones unsorted",
        with_change("spec.training.milestones", [60, 30]),
        "spec.training.milestones",
        False,
    ),
    (
        "milestone after last epoch",
        with_change("spec.training.milestones", [30, 95]),
        "spec.training.milestones",
        False,
    ),
    ("negative GPUs", with_change("spec.resources.gpusPerPod", -1), "spec.resources.gpusPerPod", True),
    (
        "Spark memory notation",
        with_change("spec.preprocessing.executorMemory", "8GB"),
        "spec.preprocessing.executorMemory",
        True,
    ),
    ("pod memory quantity", with_change("spec.resources.memory", "lots"), "spec.resources.memory", True),
    (
        "fp16 on CPU",
        with_change("spec.resources.gpusPerPod", 0, with_change("spec.training.precision", "fp16")),
        "spec.training.precision",
        False,
    ),
    (
        "SyncBatchNorm on CPU",
        with_change("spec.resources.gpusPerPod", 0, with_change("spec.training.syncBatchNorm", True)),
        "spec.training.syncBatchNorm",
        False,
    ),
    (
        "bf16 gradient compression on CPU",
        with_change("spec.resources.gpusPerPod", 0, with_change("spec.training.gradientCompression", "bf16")),
        "spec.training.gradientCompression",
        False,
    ),
    (
        "control level beyond budget",
        with_change("spec.pruning.controls", {"levels": [12]}),
        "spec.pruning.controls.levels",
        False,
    ),
    (
        "control branch twice",
        with_change("spec.pruning.controls", {"branches": ["random-reinit", "random-reinit"]}),
        "spec.pruning.controls.branches",
        False,
    ),
    (
        "toleration operator",
        with_change("spec.resources.tolerations", [{"key": "gpu", "operator": "Maybe"}]),
        "spec.resources.tolerations[0].operator",
        True,
    ),
    (
        "warmup longer than training",
        with_change("spec.training.warmupEpochs", 90),
        "spec.training.warmupEpochs",
        False,
    ),
    ("wrong apiVersion", with_change("apiVersion", "lth.dev/v1"), "apiVersion", False),
    (
        "crop larger than the images",
        with_change("spec.training.cropSize", 300),
        "spec.training.cropSize",
        False,
    ),
    ("image size too small", with_change("spec.dataset.imageSize", 8), "spec.dataset.imageSize", True),
    ("export to http", with_change("spec.export.url", "https://bucket/x"), "spec.export.url", True),
    ("export bucket name", with_change("spec.export.url", "s3://Bucket_1/x"), "spec.export.url", True),
    (
        "export secret without a url",
        with_change("spec.export.secretName", "s3-credentials"),
        "spec.export.secretName",
        False,
    ),
    (
        "ticket secret without s3",
        with_change("spec.ticket", {"run": "other", "secretName": "s3-credentials"}),
        "spec.ticket.secretName",
        False,
    ),
    (
        "MLflow credentials in the URI",
        with_change("spec.tracking", {"mlflow": {"trackingUri": "https://ml:hunter2@mlflow.example"}}),
        "spec.tracking.mlflow.trackingUri",
        True,
    ),
    (
        "MLflow URI not http",
        with_change("spec.tracking", {"mlflow": {"trackingUri": "databricks"}}),
        "spec.tracking.mlflow.trackingUri",
        True,
    ),
]


def test_mlflow_credentials_in_the_uri_are_refused_without_being_repeated() -> None:
    doc = with_change("spec.tracking", {"mlflow": {"trackingUri": "https://ml:hunter2@mlflow.example/"}})
    _, problems = check_run(doc)
    assert [(p.path, p.message) for p in problems] == [
        (
            "spec.tracking.mlflow.trackingUri",
            "Value error, credentials belong in a Secret (secretName), not in the URI",
        )
    ]
    fine = with_change(
        "spec.tracking", {"mlflow": {"trackingUri": "https://mlflow.example/a/b", "secretName": "s"}}
    )
    assert check_run(fine)[1] == []
    # An `@` after the host passes this check, but the spec-wide one (lth.api.wire) reads user
    # info up to the last `@`, as a pasted password may hold a raw `/`: refused, not repeated.
    slashed = with_change("spec.tracking", {"mlflow": {"trackingUri": "https://ml:hun/ter2@mlflow.example"}})
    assert [(p.path, p.message) for p in check_run(slashed)[1]] == [
        (
            "spec.tracking.mlflow.trackingUri",
            "https://***@mlflow.example carries user info (credentials): give them by reference, "
            "from a Secret",
        )
    ]


@pytest.mark.parametrize(("doc", "field"), [(d, f) for _, d, f, _ in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_spec_is_refused_naming_the_field(doc: dict[str, Any], field: str) -> None:
    _, problems = check_run(doc)
    assert problems, "the spec was accepted"
    assert any(p.path == field for p in problems), [str(p) for p in problems]


def test_at_least_fifteen_broken_specs_are_covered() -> None:
    assert len({field for _, _, field, _ in BROKEN}) >= 15


def test_lth_validate_prints_each_problem_and_fails(tmp_path: Path) -> None:
    bad = with_change("spec.pruning.fraction", 1.5, with_change("spec.model.arch", "vgg17"))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [sys.executable, "-m", "lth", "validate", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"{path}: spec.pruning.fraction:" in result.stderr
    assert f"{path}: spec.model.arch:" in result.stderr


def test_lth_validate_accepts_the_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lth", "validate", *map(str, EXAMPLES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid") == len(EXAMPLES)


def test_lth_validate_refuses_a_shm_size_the_data_loaders_outgrow(tmp_path: Path) -> None:
    """The defaults: 4 processes x 8 workers x 4 batches of 256 images, each a 256 px stored image
    (training) and a 224 px center crop (evaluation): 10.6 GiB of /dev/shm."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(with_change("spec.resources.shmSize", "8Gi")))
    result = subprocess.run(
        [sys.executable, "-m", "lth", "validate", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"{path}: spec.resources.shmSize: 8Gi is less than the 10.6Gi of /dev/shm" in result.stderr
    assert "4 processes x 8 workers x 4 batches of 256 images" in result.stderr
    _, problems = check_run(with_change("spec.resources.shmSize", "11Gi"))
    assert not problems
    _, problems = check_run(
        with_change("spec.training.workers", 0, with_change("spec.resources.shmSize", "64Mi"))
    )
    assert not problems  # no workers, nothing in /dev/shm


def test_lth_validate_names_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "lth", "validate", str(missing)], capture_output=True, text=True
    )
    assert result.returncode == 1 and str(missing) in result.stderr and "cannot read" in result.stderr


def test_nccl_and_rdma_passthrough_reach_the_trainer_pods() -> None:
    """spec.resources.env, extraResources and ipcLock: what a multi-pod run needs for NCCL over
    InfiniBand/RoCE instead of TCP; the PyTorchJob stays valid against the upstream CRD."""
    from lth.api.defaults import WorkloadDefaults
    from lth.api.workload import RunPaths
    from lth.cluster.children.objects import RunRef
    from lth.cluster.children.pytorchjob import pytorch_job
    from tests.k8s_schema import schema_errors

    doc = with_change(
        "spec.resources",
        {
            "pods": 2,
            "env": {"NCCL_IB_HCA": "mlx5", "NCCL_SOCKET_IFNAME": "eth0"},
            "extraResources": {"rdma/rdma_shared_device_a": "1"},
            "ipcLock": True,
        },
    )
    run, problems = check_run(doc)
    assert run is not None and not problems
    job = pytorch_job(RunRef("r50", "ml", "uid"), run.spec, RunPaths("/mnt/lth", "r50"), 0, "main", 1,
                      None, WorkloadDefaults())  # fmt: skip
    for replica in ("Master", "Worker"):
        (container,) = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"]
        assert container["env"] == [
            {"name": "NCCL_IB_HCA", "value": "mlx5"},
            {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"},
        ]
        assert container["resources"]["limits"] == {"rdma/rdma_shared_device_a": "1", "nvidia.com/gpu": "4"}
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert schema_errors(job) == []
    minimal = RunSpec.model_validate(MINIMAL["spec"])
    plain = pytorch_job(RunRef("r50", "ml", "uid"), minimal, RunPaths("/mnt/lth", "r50"), 0, "main", 1,
                        None, WorkloadDefaults())  # fmt: skip
    (container,) = plain["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert "env" not in container and container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    _, problems = check_run(with_change("spec.resources.env", {"RANK": "3", "bad-name": "x"}))
    assert {p.path for p in problems} == {"spec.resources.env.RANK", "spec.resources.env.bad-name"}
    _, problems = check_run(with_change("spec.resources.extraResources", {"memory": "1Gi", "rdma/x": "lots"}))
    assert {p.path for p in problems} == {
        "spec.resources.extraResources.memory",
        "spec.resources.extraResources.rdma/x",
    }


def test_whole_stored_images_are_checked_by_their_short_side_and_largest_crop() -> None:
    """resize: whole stores a 256 short side and a long side up to maxSide (default 512); a
    training sample then takes at most its largest crop (256 x 343 with rounding, and the
    repeated edge row and column) in a batch, so the loaders' /dev/shm is
    4 x 8 x 4 x 256 x (257 x 344 + 224²) x 3 bytes."""
    whole = with_change("spec.dataset.resize", "whole")
    assert RunSpec.model_validate(whole["spec"]).dataset.long_side_cap == 512
    _, problems = check_run(with_change("spec.resources.shmSize", "13Gi", whole))
    assert not problems
    _, problems = check_run(with_change("spec.resources.shmSize", "12Gi", whole))
    assert [p.path for p in problems] == ["spec.resources.shmSize"]
    assert (
        "12.7Gi" in problems[0].message
        and "257x344 px stored crops for training, 224 px" in problems[0].message
    )
    _, problems = check_run(with_change("spec.training.cropSize", 288, whole))
    assert [(p.path, p.message) for p in problems] == [
        ("spec.training.cropSize", "288 is larger than the images (256, spec.dataset.shortSide)")
    ]
    _, problems = check_run(with_change("spec.dataset.maxSide", 200, whole))
    assert [(p.path, p.message) for p in problems] == [
        ("spec.dataset.maxSide", "200 is smaller than shortSide 256")
    ]
    _, problems = check_run(with_change("spec.dataset.maxSide", 512))
    assert [(p.path, p.message) for p in problems] == [
        ("spec.dataset.maxSide", "applies to resize: whole only")
    ]
