"""The report's learning curves: top-1 after each epoch of every level from its progress.jsonl,
the controls dashed, linked from the model card."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from lth.api import LevelStatus, RunSpec, RunStatus
from lth.api.naming import RunLayout
from lth.results.curves import curves_figure
from lth.results.export import write_report

SPEC = RunSpec.model_validate(
    {"dataset": {"path": "digits"}, "model": {"arch": "smallcnn"}, "training": {"epochs": 3}}
)


def search(run_dir: Path) -> RunStatus:
    """Level 0 (epochs 1-3), levels 1 and 2 rewound to epoch 1 (epochs 2-3), a control at 2."""
    rows = [(0, "main", 1.0), (1, "main", 0.8), (2, "main", 0.64), (2, "random-reinit", 0.64)]
    levels = []
    for level, branch, density in rows:
        layout = RunLayout(run_dir).level(level, branch)  # type: ignore[arg-type]
        layout.dir.mkdir(parents=True)
        epochs = [1, 2, 3] if level == 0 else [2, 3]
        records = [{"level": level, "branch": branch, "epoch": e, "top1": 50.0 + 10 * e - level}
                   for e in epochs]  # fmt: skip
        layout.progress.write_text("".join(json.dumps(r) + "\n" for r in records))
        name = f"run-level-{level:02d}"
        row = {"level": level, "branch": branch, "density": density, "top1": records[-1]["top1"]}
        levels.append(LevelStatus.model_validate({"name": name, "phase": "Succeeded", **row}))
    return RunStatus(phase="Succeeded", levels=levels, dense_top1=80.0, accepted_spec=SPEC)


def test_every_level_is_a_curve_over_its_epochs_and_the_controls_are_dashed(tmp_path: Path) -> None:
    figure = curves_figure(search(tmp_path), tmp_path)
    (axes,) = figure.axes
    lines = {line.get_label(): line for line in axes.lines}
    assert list(lines) == [
        "level 0, 100.0%",
        "level 1, 80.0%",
        "level 2, 64.0%",
        "level 2 random reinit (same mask)",
    ]
    assert list(lines["level 0, 100.0%"].get_xdata()) == [1, 2, 3]
    assert list(lines["level 2, 64.0%"].get_xdata()) == [2, 3]  # the global epoch: rewound to 1
    assert list(lines["level 2, 64.0%"].get_ydata()) == [68.0, 78.0]
    assert {label: line.get_linestyle() for label, line in lines.items()} == {
        "level 0, 100.0%": "-",
        "level 1, 80.0%": "-",
        "level 2, 64.0%": "-",
        "level 2 random reinit (same mask)": "--",
    }
    control, ticket = lines["level 2 random reinit (same mask)"], lines["level 2, 64.0%"]
    assert control.get_color() == ticket.get_color() != lines["level 0, 100.0%"].get_color()


def test_the_report_draws_the_curves_beside_the_accuracy_plot_and_the_card_links_them(tmp_path: Path) -> None:
    ticket = write_report(tmp_path, search(tmp_path))
    with Image.open(ticket / "learning-curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 900 and image.size[1] > 500
    card = (ticket / "README.md").read_text()
    assert "![learning curves](learning-curves.png)" in card
    assert card.index("![accuracy vs density](accuracy.png)") < card.index("![learning curves]")


def test_a_run_without_finished_epochs_still_gets_an_empty_figure(tmp_path: Path) -> None:
    status = RunStatus(phase="Failed", levels=[LevelStatus(name="run-level-00", level=0, phase="Failed")])
    assert len(curves_figure(status, tmp_path).axes[0].lines) == 0
    assert (write_report(tmp_path, status) / "learning-curves.png").stat().st_size > 1000
