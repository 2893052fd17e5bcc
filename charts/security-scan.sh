#!/usr/bin/env bash
# Security scan of the rendered chart and the Dockerfiles with checkov (not in the dev
# extra: it pulls ~100 packages). Findings and decisions: charts/SECURITY.md.
#   python3 -m venv /tmp/checkov && /tmp/checkov/bin/pip install checkov
#   CHECKOV=/tmp/checkov/bin/checkov charts/security-scan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV=${CHECKOV:-checkov}
PYTHON=${PYTHON:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Render with Helm's engine: the defaults, and the namespaced install with every toggle on.
PYTHONPATH=operator:. "$PYTHON" - "$out" <<'PY'
import sys
from pathlib import Path

import helm_python

from tests.cluster.test_chart import CUSTOM

chart = helm_python.Chart.load("charts/lth-operator")
for label, values in (("default", {}), ("custom", CUSTOM)):
    folder = Path(sys.argv[1]) / label
    folder.mkdir()
    for path, text in chart.render(values, name="lth", namespace="lth-system").items():
        if path.endswith(".yaml") and text.strip():
            (folder / Path(path).name).write_text(text)
PY
status=0
"$CHECKOV" -d "$out" --framework kubernetes --compact --quiet --skip-download || status=1
"$CHECKOV" -d images --framework dockerfile --compact --quiet --skip-download || status=1
exit $status
