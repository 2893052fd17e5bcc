"""The Dockerfiles, checked without a Docker engine: what they copy exists, they run as
non-root, and each image's packages import with only that image's extra installed."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import posixpath
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lth.api.defaults import WORKLOAD_UID
from lth.api.workload import SPARK_MAIN_IN_IMAGE

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"operator": ["lth"], "spark": ["lth_spark"], "trainer": ["lth_trainer"]}
"""Each image's extra and the packages whose every module must import in it."""


IGNORED = {
    line.strip()
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line.strip() and line[0] != "#"
}


def instructions(image: str) -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(ROOT / "images" / image / "Dockerfile")))


@pytest.mark.parametrize("image", IMAGES)
def test_every_copy_source_exists_in_the_build_context(image: str) -> None:
    copies = [c for c in instructions(image) if c.cmd in ("COPY", "ADD")]
    assert copies
    for copy in copies:
        assert copy.cmd == "COPY", f"{image}: use COPY, not ADD ({copy.original})"
        assert not any(f.startswith("--from") for f in copy.flags)
        *sources, _ = copy.value
        for source in sources:
            assert (ROOT / source).exists(), f"images/{image}/Dockerfile: {source} is not in the repository"
            assert source.rstrip("/") not in IGNORED, f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = [c.value[0] for c in instructions(image) if c.cmd == "USER"]
    assert users, f"{image} never leaves root"
    assert users[-1].isdigit() and users[-1] != "0"


@pytest.mark.parametrize("image", ["spark", "trainer"])
def test_workload_images_run_as_the_default_workload_uid(image: str) -> None:
    """Spark and trainer pods write the same volume: without a securityContext from the pod
    spec (no Spark webhook), the images' own user must already be the operator's default."""
    users = [c.value[0] for c in instructions(image) if c.cmd == "USER"]
    assert users[-1] == str(WORKLOAD_UID)
    runs = " ".join(" ".join(c.value) for c in instructions(image) if c.cmd == "RUN")
    assert f"useradd --uid {WORKLOAD_UID} --user-group" in runs, f"{image}: the user has no passwd entry"


EXTRAS = {"operator": "operator", "spark": "spark", "trainer": "trainer,export"}
"""What each image installs: its own extra; the trainer's also runs the export Job (lth report)."""


@pytest.mark.parametrize("image", IMAGES)
def test_installs_its_own_extra_only(image: str) -> None:
    runs = " ".join(" ".join(c.value) for c in instructions(image) if c.cmd == "RUN")
    assert re.findall(r"\.\[([a-z,]+)\]", runs) == [EXTRAS[image]]


def test_bases() -> None:
    froms = {image: [c.value[0] for c in instructions(image) if c.cmd == "FROM"] for image in IMAGES}
    assert froms["operator"] == ["python:3.12-slim"]
    args = {
        c.value[0].split("=")[0]: c.value[0].split("=", 1)[1]
        for c in instructions("spark")
        if c.cmd == "ARG" and "=" in c.value[0]
    }
    assert froms["spark"] == ["apache/spark:${SPARK_VERSION}-python3"] and args["SPARK_VERSION"].startswith(
        "4."
    )
    assert froms["trainer"] == ["pytorch/pytorch:${PYTORCH_TAG}"]
    tag = next(c.value[0].split("=", 1)[1] for c in instructions("trainer") if c.cmd == "ARG")
    assert tag.startswith("2.14.1-cuda") and tag.endswith("-runtime")
    assert "--constraint /tmp/base-torch.txt" in " ".join(
        " ".join(c.value) for c in instructions("trainer") if c.cmd == "RUN"
    ), "the trainer must not reinstall the base image's torch"


def test_spark_image_puts_the_main_file_where_the_application_points() -> None:
    main_path = SPARK_MAIN_IN_IMAGE.removeprefix("local://")
    copies = [c.value for c in instructions("spark") if c.cmd == "COPY"]
    assert ("spark/lth_spark/", posixpath.dirname(main_path) + "/") in copies
    if not (ROOT / "spark" / "lth_spark" / "__main__.py").exists():
        pytest.skip("lth_spark has no __main__.py yet: the image would lack the main file")


# --------------------------------------------------------------------------- imports per extra


@functools.cache
def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"": project["dependencies"], **project["optional-dependencies"]}


def _closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, with their dependencies (as installed here)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for raw in requires:
            dep = Requirement(raw)
            if dep.marker is None or dep.marker.evaluate({"extra": ""}):
                todo.append(dep)
    return seen


@functools.cache
def _modules_by_distribution() -> dict[str, set[str]]:
    by_dist: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(canonicalize_name(dist), set()).add(module)
    return by_dist


@functools.cache
def forbidden_modules(image: str) -> frozenset[str]:
    """Top-level modules of the other extras' distributions that this image does not install."""
    allowed = _closure(_extras()[""] + _extras()[image])
    others = {canonicalize_name(Requirement(r).name) for extra, reqs in _extras().items() for r in reqs}
    absent = others - allowed
    return frozenset(
        module
        for dist in absent
        for module in _modules_by_distribution().get(dist, ())
        if not module.startswith("_")
    )


IMPORT_ALL = r"""
import ast, importlib, importlib.util, json, pkgutil, sys
forbidden, roots = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])

class NotInThisImage:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in forbidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not in this image)", name=name)
        return None

sys.meta_path.insert(0, NotInThisImage())
imported = []
for root in roots:
    package = importlib.import_module(root)
    for info in pkgutil.walk_packages(package.__path__, root + "."):
        if info.name.endswith(".__main__"):
            # Running it would start the job: import what it imports instead.
            tree = ast.parse(open(importlib.util.find_spec(info.name).origin).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        importlib.import_module(alias.name)
                elif isinstance(node, ast.ImportFrom):
                    importlib.import_module(node.module or "", root if node.level else None)
        else:
            importlib.import_module(info.name)
        imported.append(info.name)
print(json.dumps(imported))
"""


def import_in_image(
    image: str, roots: list[str], forbidden: frozenset[str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, json.dumps(sorted(forbidden)), json.dumps(roots)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_forbidden_sets_are_what_the_extras_say() -> None:
    assert {"torch", "pyspark", "pytest"} <= forbidden_modules("operator")
    assert "kopf" not in forbidden_modules("operator")
    assert {"kopf", "torch", "kubernetes"} <= forbidden_modules("spark")
    assert {"pyspark", "simplejpeg"}.isdisjoint(forbidden_modules("spark"))
    assert {"kopf", "pyspark", "mlxtend"} <= forbidden_modules("trainer")
    assert {"torch", "torchvision", "numpy"}.isdisjoint(forbidden_modules("trainer"))


@pytest.mark.parametrize("image", IMAGES)
def test_entry_packages_import_with_only_their_extra(image: str) -> None:
    result = import_in_image(image, IMAGES[image], forbidden_modules(image))
    assert result.returncode == 0, f"{image} image: {result.stderr[-2000:]}"
    imported = json.loads(result.stdout)
    if image == "operator":
        assert {"lth.api", "lth.plan", "lth.cluster.handlers", "lth.cluster.metrics"} <= set(imported)


def test_the_import_guard_catches_a_stray_import() -> None:
    result = import_in_image("operator", ["lth"], forbidden_modules("operator") | {"pydantic"})
    assert result.returncode != 0 and "not in this image" in result.stderr


# --------------------------------------------------------------------------- make images

BUILD = ROOT / "images" / "build.sh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def stub(bin_dir: Path, name: str, log: Path, fail_on: str = "") -> None:
    """A fake `name` that appends its command line to `log`, then fails when its
    arguments start with `fail_on` (e.g. `info`: a docker CLI without an engine)."""
    bin_dir.mkdir(exist_ok=True)
    fails = f'case "$*" in "{fail_on}"*) exit 1;; esac\n' if fail_on else ""
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{fails}')
    script.chmod(0o755)


def build_images(bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """images/build.sh with nothing on PATH but the stubs in bin_dir."""
    bin_dir.mkdir(exist_ok=True)
    return subprocess.run(
        ["/bin/bash", str(BUILD)],
        env={"PATH": str(bin_dir), **env},
        capture_output=True,
        text=True,
        cwd="/",
    )


def pushed(builder: str, registry: str, tag: str, build_flags: tuple[str, ...] = ()) -> list[str]:
    lines = [f"{builder} info"]
    for image in ("operator", "spark", "trainer"):
        ref = f"{registry}/lth-{image}:{tag}"
        flags = " ".join(build_flags)
        lines += [
            f"{builder} build {flags + ' ' if flags else ''}-f images/{image}/Dockerfile -t {ref} .",
            f"{builder} push {ref}",
        ]
    return lines


def helm_values(registry: str, tag: str) -> list[str]:
    return [
        f"--set image.repository={registry}/lth-operator",
        f"--set image.tag={tag}",
        f"--set workloads.trainerImage={registry}/lth-trainer:{tag}",
        f"--set workloads.sparkImage={registry}/lth-spark:{tag}",
    ]


def test_make_images_builds_pushes_and_prints_the_chart_values_with_docker(tmp_path: Path) -> None:
    log = tmp_path / "log"
    for name in ("docker", "podman", "buildah"):
        stub(tmp_path / "bin", name, log)
    result = build_images(
        tmp_path / "bin", REGISTRY="registry.example:5000/ml/", TAG="v2-rc.1", PLATFORM="linux/amd64"
    )
    assert result.returncode == 0, result.stderr
    registry = "registry.example:5000/ml"
    assert log.read_text().splitlines() == pushed(
        "docker", registry, "v2-rc.1", ("--platform", "linux/amd64")
    )
    for line in helm_values(registry, "v2-rc.1"):
        assert line in result.stdout


def test_make_images_passes_over_a_docker_cli_without_an_engine(tmp_path: Path) -> None:
    log = tmp_path / "log"
    stub(tmp_path / "bin", "docker", log, fail_on="info")
    stub(tmp_path / "bin", "podman", log)
    result = build_images(tmp_path / "bin", REGISTRY="r.example")
    assert result.returncode == 0, result.stderr
    # The tag defaults to the project version, the chart's appVersion.
    assert log.read_text().splitlines() == ["docker info", *pushed("podman", "r.example", VERSION)]
    assert f"--set workloads.sparkImage=r.example/lth-spark:{VERSION}" in result.stdout


def test_make_images_with_buildah_only(tmp_path: Path) -> None:
    log = tmp_path / "log"
    stub(tmp_path / "bin", "buildah", log)
    result = build_images(tmp_path / "bin", REGISTRY="r.example", TAG="1")
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == pushed("buildah", "r.example", "1")


@pytest.mark.parametrize("docker", [False, True], ids=["nothing", "docker-without-engine"])
def test_make_images_without_a_builder_says_what_is_missing(tmp_path: Path, docker: bool) -> None:
    log = tmp_path / "log"
    if docker:
        stub(tmp_path / "bin", "docker", log, fail_on="info")
    result = build_images(tmp_path / "bin", REGISTRY="r.example")
    assert result.returncode == 1 and result.stdout == ""
    (message,) = result.stderr.splitlines()
    assert message.startswith("make images: no image builder works here")
    assert "podman: not installed" in message and "buildah: not installed" in message
    if docker:
        assert "docker: installed, but `docker info` cannot reach an engine" in message
        assert log.read_text().splitlines() == ["docker info"]
    else:
        assert "docker: not installed" in message


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "REGISTRY is required"),
        ({"REGISTRY": "Registry.Example"}, "REGISTRY=Registry.Example is not"),
        ({"REGISTRY": "r.example", "TAG": "not a tag"}, "TAG=not a tag is not a valid image tag"),
    ],
)
def test_make_images_refuses_bad_arguments_before_building(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    log = tmp_path / "log"
    stub(tmp_path / "bin", "docker", log)
    result = build_images(tmp_path / "bin", **env)
    assert result.returncode == 1
    (message,) = result.stderr.splitlines()
    assert message.startswith("make images: ") and says in message
    assert not log.exists()


def test_make_images_stops_at_the_first_failed_build(tmp_path: Path) -> None:
    log = tmp_path / "log"
    stub(tmp_path / "bin", "podman", log, fail_on="build -f images/spark")
    result = build_images(tmp_path / "bin", REGISTRY="r.example", TAG="1")
    assert result.returncode == 1
    assert "podman could not build r.example/lth-spark:1 (images/spark/Dockerfile)" in result.stderr
    assert log.read_text().splitlines() == pushed("podman", "r.example", "1")[:4]
    assert "--set" not in result.stdout


def test_make_images_is_a_make_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^images:\n\t@?REGISTRY=.* images/build\.sh$", makefile, re.MULTILINE)
    assert BUILD.stat().st_mode & 0o111, "images/build.sh is not executable"
    helptext = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "make images REGISTRY=" in helptext
