"""Fuzzing spec parsing: any document, any YAML text gives a result or one-line problems naming a
field, never a traceback (issue 23)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lth.api.validation import check_run, parse_spec
from lth.storage.files import UnreadableDocument, read_yaml
from tests.api.test_api import EXAMPLES

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
BASES = [json.loads(json.dumps(yaml.safe_load(p.read_text()))) for p in EXAMPLES]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_runs(draw: st.DrawFn) -> Any:
    """An example run.yaml with a few of its fields (or new ones) set to any JSON value."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        value = draw(JSON)
        if not path:
            return value
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(st.text(max_size=8))] = value
        else:
            parent[path[-1]] = value
    return doc


def _one_line_each(problems: list[Any]) -> None:
    for problem in problems:
        assert "\n" not in str(problem) and problem.message


@given(mutated_runs())
@settings(max_examples=300)
def test_any_run_document_gives_a_run_or_one_line_problems(doc: Any) -> None:
    run, problems = check_run(doc)
    assert run is not None or problems
    _one_line_each(problems)
    spec, spec_problems = parse_spec(doc.get("spec") if isinstance(doc, dict) else doc)
    assert spec is not None or spec_problems
    _one_line_each(spec_problems)


@given(st.text(max_size=200) | st.sampled_from(["a: 2001-13-01", "!!binary x", "? [a]\n: 1", "a: &x [*x]"]))
@settings(max_examples=300)
def test_any_yaml_text_gives_documents_or_one_line(tmp_path_factory: Any, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("yaml")) / "run.yaml"
    path.write_text(text)
    try:
        documents = read_yaml(path)
    except UnreadableDocument as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    for document in documents:
        _one_line_each(check_run(document)[1])
