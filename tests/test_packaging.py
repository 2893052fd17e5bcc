"""The layout promises of DESIGN.md: what each package may import."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import lth

ROOT = Path(__file__).resolve().parents[1]


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout))


def test_control_plane_imports_neither_torch_nor_pyspark() -> None:
    modules = [f"lth.{m.name}" for m in pkgutil.iter_modules(lth.__path__) if m.name != "__main__"]
    loaded = _imported_after(modules)
    assert not {m for m in loaded if m.split(".")[0] in {"torch", "torchvision", "pyspark"}}


def test_api_imports_only_pydantic() -> None:
    loaded = _imported_after(["lth.api"])
    assert not {
        m for m in loaded if m.split(".")[0] in {"kopf", "kubernetes", "yaml", "rich", "torch", "pyspark"}
    }


def test_no_package_shadows_the_standard_library_operator() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__)"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    assert str(ROOT / "operator") not in out.stdout


def test_torch_is_pinned() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.14.1"' in pyproject and '"torchvision==0.29.1"' in pyproject


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
