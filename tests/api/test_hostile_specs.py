"""Credentials by reference only, what a run may name, and the smaller holes of issue 23: each a
one-line refusal naming the field, and no credential in anything the project writes or shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lth.api import MlflowSpec, RunSpec, RunStatus, TrackingSpec
from lth.api.defaults import WorkloadDefaults
from lth.api.observed import ObservedChild, ObservedSource
from lth.api.validation import check_run
from lth.api.workload import RunPaths, prep_arguments, trainer_arguments, write_termination_log
from lth.cluster.children.export_job import export_job
from lth.cluster.children.objects import RunRef
from lth.cluster.children.pytorchjob import pytorch_job
from tests.api.test_api import MINIMAL, with_change
from tests.k8s_schema import schema_errors

SECRET = "s3cr3t-Value-9f2a"
TOKEN = "Zx81Qw0pLm3Nb7Vc5Tr2Yh6Ju4"
"""The body of a token as the services hand them out (GitHub's, Hugging Face's)."""


def _problems(doc: dict[str, Any]) -> list[str]:
    _, problems = check_run(doc)
    return [str(p) for p in problems]


@pytest.mark.parametrize(
    "name", ["HF_TOKEN", "WANDB_API_KEY", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "MY_DB_PASS", "GH_AUTH"]
)
def test_a_credential_written_as_a_plain_env_value_is_refused_without_showing_it(name: str) -> None:
    problems = _problems(with_change("spec.resources.env", {name: SECRET, "NCCL_SOCKET_IFNAME": "eth0"}))
    assert len(problems) == 1 and problems[0].startswith(f"spec.resources.env.{name}: ")
    assert "secretKeyRef" in problems[0] and SECRET not in problems[0]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (
            "spec.export",
            {"url": "s3://tickets/x", "endpointUrl": f"http://minio:{SECRET}@minio:9000"},
            "endpointUrl",
        ),
        ("spec.ticket", {"url": f"https://reader:{SECRET}@tickets.example/t/"}, "url"),
        ("spec.ticket", {"url": f"https://tickets.example/t/?X-Amz-Signature={SECRET}"}, "url"),
        ("spec.dataset", {"path": f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/imagenet"}, "path"),
        ("spec.resources", {"env": {"TRACKING_URI": f"https://u:{SECRET}@mlflow.example"}}, "TRACKING_URI"),
        # spec.tracking's own check (user info before the first /) and the generic ones (a raw /
        # in the password, a token in the query) both hold for the MLflow URI.
        ("spec.tracking", {"mlflow": {"trackingUri": f"https://u:{SECRET}@mlflow.example"}}, "trackingUri"),
        ("spec.tracking", {"mlflow": {"trackingUri": f"https://u:a/{SECRET}@mlflow.example"}}, "trackingUri"),
        ("spec.tracking", {"mlflow": {"trackingUri": f"https://ml.example/?token={SECRET}"}}, "trackingUri"),
        ("spec.resources", {"nodeSelector": {"note": f"ghp_{TOKEN}"}}, "note"),
        ("spec.resources", {"env": {"HUB": f"hf_{TOKEN}"}}, "HUB"),
    ],
)
def test_a_credential_in_any_field_is_refused_without_showing_it(path: str, value: Any, field: str) -> None:
    problems = _problems(with_change(path, value))
    assert any(field in p.split(":")[0] for p in problems), problems
    assert not [p for p in problems if SECRET in p or TOKEN in p]


def _secret_spec() -> RunSpec:
    env = {
        "NCCL_SOCKET_IFNAME": "ib-not-a-secret",
        "WANDB_API_KEY": {"valueFrom": {"secretKeyRef": {"name": "wandb", "key": "apiKey"}}},
    }
    run, problems = check_run(with_change("spec.resources", {"pods": 2, "env": env}))
    assert run is not None and problems == []
    return run.spec


def test_an_env_value_from_a_secret_is_rendered_by_reference_and_valid_upstream() -> None:
    spec = _secret_spec()
    job = pytorch_job(RunRef("r50", "ml", "uid"), spec, RunPaths("/mnt/lth", "r50"), 0, "main", 1)
    for replica in ("Master", "Worker"):
        (container,) = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"]
        assert container["env"] == [
            {"name": "NCCL_SOCKET_IFNAME", "value": "ib-not-a-secret"},
            {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "apiKey"}}},
        ]
    assert schema_errors(job) == []
    _, problems = check_run(with_change("spec.resources.env", {"X": {"valueFrom": {"configMapKeyRef": {}}}}))
    assert [(p.path, p.message) for p in problems] == [
        ("spec.resources.env.X.valueFrom.secretKeyRef", "Field required"),
        ("spec.resources.env.X.valueFrom.configMapKeyRef", "unknown field"),
    ]


def test_command_lines_exports_and_the_export_jobs_environment_carry_no_env_value(tmp_path: Path) -> None:
    """Plain env values are shown only where they act: the pods' own environment."""
    from lth.api import BestTicket, LevelStatus
    from lth.results.export import write_report
    from tests.storage.test_tickets import write_ticket

    spec = _secret_spec()
    paths = RunPaths(str(tmp_path), "r50")
    write_ticket(Path(paths.run_dir) / "levels" / "00")  # its mask and rewind weights
    row = LevelStatus(name="r50-level-00", level=0, phase="Succeeded", density=1.0, top1=76.1)
    best = BestTicket(level=0, density=1.0, top1=76.1, summary="L0")
    status = RunStatus(phase="Succeeded", levels=[row], best=best, dense_top1=76.1, accepted_spec=spec)
    shown = [
        json.dumps(prep_arguments(spec, paths)),
        json.dumps(trainer_arguments(spec, paths, 3, "main")),
        json.dumps(export_job(RunRef("r50", "ml", "uid"), spec, paths, 1, status)),
    ]
    ticket = write_report(Path(paths.run_dir), status)
    shown += [path.read_text(errors="replace") for path in ticket.iterdir() if path.suffix != ".png"]
    assert all("ib-not-a-secret" not in text for text in shown)
    assert "secretKeyRef" in shown[0]  # the reference itself is no secret
    assert (
        RunSpec.model_validate(json.loads((ticket / "spec.json").read_text())).resources.env[
            "NCCL_SOCKET_IFNAME"
        ]
        == "***"
    )


def test_messages_that_reach_status_events_and_termination_logs_never_show_a_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://minio:{SECRET}@127.0.0.1:1"
    child = ObservedChild("r-level-00", 1, "Failed", message=f"bad input: {url}/t/ticket.json: refused")
    source = ObservedSource(found=True, problem=f"{url}: 403")
    write_termination_log(str(tmp_path / "termination"), f"cannot download {url}/x?token={SECRET}")
    _, problems = check_run(with_change("spec.ticket", {"path": f"{url}/ticket"}))
    shown = [child.message, source.problem, (tmp_path / "termination").read_text(), *map(str, problems)]
    assert shown[0] == "bad input: http://***@127.0.0.1:1/t/ticket.json: refused"
    assert all(SECRET not in text for text in shown)

    from lth.storage.objectstore import fetch_ticket
    from lth.storage.tickets import TicketError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(TicketError) as caught:
        fetch_ticket("s3://tickets/t", tmp_path / "dest")
    assert SECRET not in str(caught.value) and "\n" not in str(caught.value)


def test_what_a_run_may_name_is_bounded_by_the_charts_values(tmp_path: Path) -> None:
    from lth.api.defaults import policy_problems

    policy = WorkloadDefaults(allowed_images=["registry.example/ml/*"], allowed_secrets=["s3-*", "wandb"])
    spec = _secret_spec()
    assert policy_problems(spec, policy) == []
    bold = spec.model_copy(
        update={
            "resources": spec.resources.model_copy(update={"image": "docker.io/evil/miner"}),
            "export": spec.export.model_copy(update={"url": "s3://tickets/x", "secret_name": "prod-db"}),
            "tracking": TrackingSpec(mlflow=MlflowSpec(tracking_uri="https://ml.example", secret_name="ml")),
        }
    )
    assert [p.path for p in policy_problems(bold, policy)] == [
        "spec.resources.image",
        "spec.export.secretName",
        "spec.tracking.mlflow.secretName",
    ]
    assert policy_problems(bold, WorkloadDefaults()) == []  # the default: any, as before
    own = spec.model_copy(
        update={"resources": spec.resources.model_copy(update={"image": policy.trainer_image})}
    )
    assert policy_problems(own, policy) == []

    run = tmp_path / "run.yaml"
    document = with_change("spec.resources.image", "docker.io/evil/miner")
    run.write_text(json.dumps(document))
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"workloads": {"allowedImages": ["registry.example/ml/*"]}}))
    done = subprocess.run(
        [sys.executable, "-m", "lth", "render", str(run), "--values", str(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        done.returncode == 1
        and "spec.resources.image: image 'docker.io/evil/miner' is not allowed" in done.stderr
    )


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.ticket", {"run": "../../.."}, "spec.ticket.run"),
        ("spec.ticket", {"run": "/etc"}, "spec.ticket.run"),
        ("spec.ticket", {"run": "a/b"}, "spec.ticket.run"),
        ("spec.training.batchSize", 10**9, "spec.training.batchSize"),
        ("spec.model.numClasses", 10**9, "spec.model.numClasses"),
        ("spec.dataset.maxImagePixels", 10**12, "spec.dataset.maxImagePixels"),
        ("spec.dataset.maxImagePixels", 40_000, "spec.dataset.maxImagePixels"),
        ("spec.export", {"url": "s3://tickets/x", "secretName": "../x"}, "spec.export.secretName"),
        (
            "spec.tracking",
            {"mlflow": {"trackingUri": "https://ml.example", "secretName": "../x"}},
            "spec.tracking.mlflow.secretName",
        ),
    ],
)
def test_out_of_bounds_names_and_numbers_are_refused_naming_the_field(
    path: str, value: Any, field: str
) -> None:
    document = with_change(path, value)
    if path == "spec.ticket":
        document["spec"]["pruning"] = {"levels": 0}
    problems = _problems(document)
    assert any(p.startswith(f"{field}: ") for p in problems), problems


@pytest.mark.parametrize(("pixels", "refused"), [(256 * 400, True), (256 * 512, False)])
def test_max_image_pixels_holds_the_largest_whole_stored_image(pixels: int, refused: bool) -> None:
    """Whole images are stored up to shortSide x maxSide (a panorama's long side at the cap), and
    the trainer refuses a shard image over maxImagePixels: a cap below that is refused up front."""
    dataset = {"path": "imagenet", "resize": "whole", "shortSide": 256, "maxSide": 512}
    problems = _problems(with_change("spec.dataset", {**dataset, "maxImagePixels": pixels}))
    capped = [p for p in problems if p.startswith("spec.dataset.maxImagePixels: ")]
    expected = (
        f"spec.dataset.maxImagePixels: {pixels} is less than the 256x512 pixels of the largest "
        "stored images (spec.dataset.shortSide, maxSide)"
    )
    assert capped == ([expected] if refused else [])


def test_the_defaults_stay_valid() -> None:
    assert _problems(MINIMAL) == []
