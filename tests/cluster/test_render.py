"""`lth render`: the operator's children for a spec, valid for the real controllers' CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.api import LotteryTicketRun
from lth.api.defaults import WorkloadDefaults, with_training_api
from lth.api.workload import RunPaths
from lth.cli import main
from lth.cluster.children.objects import RunRef
from lth.cluster.children.pytorchjob import pytorch_job
from lth.cluster.children.spark_application import spark_application
from lth.cluster.render import PLACEHOLDER_UID, SPARK_SERVICE_ACCOUNT
from tests.k8s_schema import schema_errors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
IMAGENET = ROOT / "examples" / "imagenet-resnet50.yaml"
TRANSFER = ROOT / "examples" / "transfer-resnet50.yaml"


def load(path: Path) -> LotteryTicketRun:
    return LotteryTicketRun.model_validate(yaml.safe_load(path.read_text()))


def render(capsys: pytest.CaptureFixture[str], *args: str | Path) -> list[dict[str, Any]]:
    code = main(["render", *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    assert out.startswith("---\n# Source: ")
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def refused(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = main(["render", *map(str, args)])
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


def ticket_flags(run: LotteryTicketRun, level: int = 0) -> list[str]:
    """A source run's best level is in its status: the examples name none, so say one; so is
    the rewind point a rewindTo auto run's analysis chose, which its pruned levels take."""
    ticket = run.spec.ticket
    flags = ["--ticket-level", "3"] if ticket and ticket.run and ticket.level is None else []
    return flags + (["--rewind-to", "0.5ep"] if run.spec.pruning.auto_rewind and level > 0 else [])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_renders_children_valid_for_the_upstream_crds(
    capsys: pytest.CaptureFixture[str], example: Path
) -> None:
    run = load(example)
    name, spec = run.metadata.name, run.spec
    docs = render(capsys, example, *ticket_flags(run))
    expected = [] if spec.dataset.format == "prepared" else [("SparkApplication", f"{name}-prep")]
    expected.append(("PyTorchJob", f"{name}-level-00"))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == expected
    for doc in docs:
        assert schema_errors(doc) == []
        assert doc["metadata"]["namespace"] == "default"
        assert doc["metadata"]["ownerReferences"][0]["name"] == name
    job = docs[-1]
    assert job["metadata"]["labels"]["lth.dev/level"] == "0"

    # The last level, and every control branch of every level, as the planner would create them.
    last = spec.level_budget
    (job,) = render(capsys, example, "--level", str(last), *ticket_flags(run, last))
    assert job["metadata"]["name"] == f"{name}-level-{last:02d}"
    assert schema_errors(job) == []
    for level in range(last + 1):
        for branch in spec.control_branches(level):
            flags = ticket_flags(run, level)
            (job,) = render(capsys, example, "--level", str(level), "--branch", branch, *flags)
            assert job["metadata"]["labels"] == {
                "app.kubernetes.io/managed-by": "lth-operator",
                "lth.dev/run": name,
                "lth.dev/level": str(level),
                "lth.dev/branch": branch,
            }
            assert schema_errors(job) == []


def test_an_auto_rewind_run_renders_its_analysis_jobs_and_levels_told_the_point(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = ROOT / "examples" / "demo-auto.yaml"
    docs = render(capsys, example, "--stability-point", "2")
    assert [d["metadata"]["name"] for d in docs] == [
        f"demo-auto-stability-02-{p}" for p in ("a", "b", "path")
    ]
    for doc in docs:
        assert schema_errors(doc) == []
        command = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
        assert command[command.index("--stability-point") + 1] == "2" and "--level" not in command
    (job,) = render(capsys, example, "--level", "3", "--rewind-to", "1ep")
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--rewind-to") + 1] == "1ep"
    code, err = refused(capsys, example, "--level", "3")
    assert code == 2 and "--rewind-to: spec.pruning.rewindTo is auto" in err
    code, err = refused(capsys, example, "--stability-point", "5")
    assert code == 2 and "--stability-point: 5 is past the ladder's points 0 to 4" in err
    code, err = refused(capsys, IMAGENET, "--stability-point", "0")
    assert code == 2 and "rewindTo is not auto" in err


def test_the_output_is_what_the_operator_builds(capsys: pytest.CaptureFixture[str]) -> None:
    run = load(IMAGENET)
    app, job = render(capsys, IMAGENET, "--namespace", "ml")
    ref = RunRef(name="resnet50-imagenet", namespace="ml", uid=PLACEHOLDER_UID)
    paths = RunPaths("/mnt/lth", "resnet50-imagenet")
    spec, _ = with_training_api((run.spec, []), None, WorkloadDefaults())  # as the operator fills it in
    assert spec is not None and spec.resources.training_api == "PyTorchJob"
    assert app == spark_application(ref, spec, paths, 1, SPARK_SERVICE_ACCOUNT, WorkloadDefaults())
    assert job == pytorch_job(ref, spec, paths, 0, "main", 1, None, WorkloadDefaults())
    assert app["spec"]["driver"]["serviceAccount"] == "lth-spark"
    (job,) = render(capsys, IMAGENET, "--level", "5", "--branch", "random-reinit")
    assert job["metadata"]["name"] == "resnet50-imagenet-level-05-reinit"
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--level") + 1] == "5"
    assert command[command.index("--run-dir") + 1] == "/mnt/lth/runs/resnet50-imagenet"


def test_the_spark_account_default_is_the_charts() -> None:
    values = yaml.safe_load((ROOT / "charts" / "lth-operator" / "values.yaml").read_text())
    assert values["sparkServiceAccount"]["name"] == SPARK_SERVICE_ACCOUNT


def test_namespace_from_the_document_or_the_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = yaml.safe_load(IMAGENET.read_text())
    doc["metadata"]["namespace"] = "team-a"
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert {d["metadata"]["namespace"] for d in render(capsys, spec)} == {"team-a"}
    assert {d["metadata"]["namespace"] for d in render(capsys, spec, "--namespace", "ml")} == {"ml"}


def test_prepared_shards_need_no_prep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = yaml.safe_load(IMAGENET.read_text())
    doc["spec"]["dataset"] = {"format": "prepared", "path": "runs/old/data"}
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump(doc))
    (job,) = render(capsys, spec)
    assert job["kind"] == "PyTorchJob" and schema_errors(job) == []
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--data") + 1] == "/mnt/lth/runs/old/data"


def test_values_file_sets_the_workload_defaults(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "image": {"repository": "registry.example/ml/lth-operator"},
                "sparkServiceAccount": {"name": "spark-driver"},
                "workloads": {
                    "trainerImage": "registry.example/ml/lth-trainer:9",
                    "sparkImage": "registry.example/ml/lth-spark:9",
                    "imagePullSecrets": ["regcred"],
                    "gpuNodeSelector": {"gpu": "yes"},
                    "runAsUser": 4242,
                },
            }
        )
    )
    app, job = render(capsys, IMAGENET, "--values", values)
    assert (app["spec"]["image"], app["spec"]["imagePullSecrets"]) == (
        "registry.example/ml/lth-spark:9",
        ["regcred"],
    )
    assert app["spec"]["driver"]["serviceAccount"] == "spark-driver"
    assert app["spec"]["driver"]["podSecurityContext"]["runAsUser"] == 4242
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/ml/lth-trainer:9"
    assert (pod["nodeSelector"], pod["imagePullSecrets"]) == ({"gpu": "yes"}, [{"name": "regcred"}])
    assert pod["securityContext"]["runAsUser"] == 4242
    assert schema_errors(app) == [] and schema_errors(job) == []
    # The chart's own values.yaml gives the built-in defaults.
    app, job = render(capsys, IMAGENET, "--values", ROOT / "charts" / "lth-operator" / "values.yaml")
    assert app["spec"]["image"] == WorkloadDefaults().spark_image


def test_transfer_runs_render_the_ticket_the_planner_resolves(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def command(*args: str | Path) -> list[str]:
        job = render(capsys, *args)[-1]
        return list(
            job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
        )

    flags = command(TRANSFER, "--ticket-level", "7")
    assert flags[flags.index("--ticket-run-dir") :][:4] == [
        "--ticket-run-dir",
        "/mnt/lth/runs/resnet50-imagenet",
        "--ticket-level",
        "7",
    ]
    doc = yaml.safe_load(TRANSFER.read_text())
    for ticket, expected in [
        ({"run": "resnet50-imagenet", "level": 4}, ["--ticket-run-dir", "/mnt/lth/runs/resnet50-imagenet"]),
        ({"path": "tickets/r50"}, ["--ticket-dir", "/mnt/lth/tickets/r50"]),
        ({"url": "https://tickets.example/r50/"}, ["--ticket-url", "https://tickets.example/r50/"]),
    ]:
        doc["spec"]["ticket"] = ticket
        spec = tmp_path / "transfer.yaml"
        spec.write_text(yaml.safe_dump(doc))
        got = command(spec)
        assert got[got.index(expected[0]) :][:2] == expected
        if "level" in ticket:
            assert got[got.index("--ticket-level") + 1] == "4"


def test_invalid_spec_fails_with_the_messages_of_validate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = yaml.safe_load(IMAGENET.read_text())
    doc["spec"]["pruning"]["fraction"] = 1.5
    doc["spec"]["training"]["epochz"] = 3
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(doc))
    code, err = refused(capsys, spec)
    assert code == 1
    assert main(["validate", str(spec)]) == 1
    assert err == capsys.readouterr().err
    assert "spec.pruning.fraction" in err and "spec.training.epochz: unknown field" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((IMAGENET, "--level", "x"), "--level: 'x' is not a level number"),
        ((IMAGENET, "--level", "-1"), "--level: '-1' is not a level number"),
        ((IMAGENET, "--level", "11"), "--level: 11 is past the level budget: the spec's levels are 0 to 10"),
        (
            (IMAGENET, "--branch", "reinit"),
            "--branch: 'reinit' is not one of main, random-reinit, random-prune, dense",
        ),
        (
            (IMAGENET, "--level", "3", "--branch", "random-prune"),
            "--branch: random-prune does not run at level 3",
        ),
        ((IMAGENET, "--branch", "dense"), "--branch: dense does not run at level 0; it runs main"),
        ((IMAGENET, "--namespace", "Team_A"), "--namespace: 'Team_A' is not a namespace name"),
        ((IMAGENET, "--ticket-level", "2"), "--ticket-level: the spec has no spec.ticket.run"),
        ((TRANSFER,), "--ticket-level: spec.ticket.run 'resnet50-imagenet' has no level"),
        ((TRANSFER, "--ticket-level", "two"), "--ticket-level: 'two' is not a level number"),
        ((TRANSFER, "--ticket-level", "1", "--level", "1"), "--level: 1 is past the level budget"),
        (
            (IMAGENET, "--values", "/nonexistent/values.yaml"),
            "--values /nonexistent/values.yaml: cannot read",
        ),
    ],
)
def test_bad_flags_give_one_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], args: tuple[str | Path, ...], says: str
) -> None:
    code, err = refused(capsys, *args)
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith("lth render: ") and says in line


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"workloads": {"runAsUser": "root"}}, "workloads.runAsUser: Input should be a valid integer"),
        ({"workloads": {"trainerimage": "x"}}, "workloads.trainerimage: unknown field"),
        ({"sparkServiceAccount": {"name": "Spark_Driver"}}, "sparkServiceAccount.name: 'Spark_Driver'"),
        ([1, 2], "is not a mapping of chart values"),
    ],
)
def test_bad_values_files_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, values: Any, says: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    code, err = refused(capsys, IMAGENET, "--values", path)
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"lth render: --values {path}: ") and says in line
