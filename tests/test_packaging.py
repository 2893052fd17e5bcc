"""The layout promises of DESIGN.md: what each package may import."""

from __future__ import annotations

import ast
import json
import pkgutil
import re
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
    modules = [m.name for m in pkgutil.walk_packages(lth.__path__, "lth.") if not m.name.endswith("__main__")]
    assert len(modules) > 40  # every module of every layer
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


SIZE_LIMITS = {"function": 80, "class": 300, "module": 500, "package": 12}
"""Lines of a function, a class, a module; modules in one package folder (issue 22)."""
PACKAGES = (ROOT / "operator" / "lth", ROOT / "spark" / "lth_spark", ROOT / "trainer" / "lth_trainer")


def test_no_function_class_module_or_package_outgrows_its_limit() -> None:
    over = []
    for root in PACKAGES:
        for path in sorted(root.rglob("*.py")):
            where = path.relative_to(ROOT)
            text = path.read_text()
            if len(text.splitlines()) > SIZE_LIMITS["module"]:
                over.append(f"module {where}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                kind = {ast.FunctionDef: "function", ast.AsyncFunctionDef: "function", ast.ClassDef: "class"}
                if type(node) in kind:
                    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > SIZE_LIMITS[kind[type(node)]]:
                        over.append(f"{kind[type(node)]} {where}:{node.name}: {lines} lines")
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            if len(modules) > SIZE_LIMITS["package"]:
                over.append(f"package {folder.relative_to(ROOT)}: {len(modules)} modules")
    assert not over, "\n".join(over)


def test_the_import_contracts_hold() -> None:
    """lint-imports (import-linter), run by `make lint` too: the layers of the control plane,
    and the workloads kept off it (their images have no kopf, kubernetes or rich)."""
    tool = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(tool)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    kept = re.search(r"Contracts: ([0-9]+) kept, 0 broken", result.stdout)
    assert kept is not None and int(kept.group(1)) >= 7, result.stdout[-3000:]
