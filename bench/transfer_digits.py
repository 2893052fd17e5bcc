"""What a transferred ticket is worth, through the real pipeline: the digits 0-4 to 5-9.

    .venv/bin/python -m bench.transfer_digits [--seeds 0 1 2]

Per seed: examples/digits-0to4.yaml searches the digits 0-4 (IMP to 5.5 %), then
examples/transfer-digits.yaml trains its best ticket on the digits 5-9 beside a
dense network and a random mask with the ticket's density in every layer (both
from a fresh init); one more transfer fine-tunes the ticket from its final
(trained) weights instead of its rewind weights. `--levels` transfers other
levels of the same search the same way (default: level 7, 21 %); `--rewind-to 1ep`
searches with late rewinding (give it its own `--root`). Spark runs once per data set;
later seeds reuse the shards as `prepared` data. Runs that finished earlier are
not run again (`lth run` on a finished run does nothing). Prints top-1 on the
target per seed and as mean (range).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def lth_run(
    example: str, name: str, seed: int, root: Path, prepared: Path | None, rewind_to: str = "0", **ticket: Any
) -> Path:
    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["training"]["seed"] = seed
    spec["pruning"]["rewindTo"] = rewind_to
    if ticket:
        spec["ticket"].update(ticket)
    if prepared is not None:
        spec["dataset"] = {**spec["dataset"], "format": "prepared", "path": str(prepared)}
        spec["dataset"].pop("classes")
    else:
        archives = ROOT / spec["dataset"]["path"]
        if not (archives / "ILSVRC2012_img_train.tar").exists():
            subprocess.run([sys.executable, "-m", "lth_spark.demo", str(archives)], check=True)
        spec["dataset"]["path"] = str(archives)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    subprocess.run([sys.executable, "-m", "lth", "run", str(path), "--root", str(root)], check=True)
    return root / "runs" / name


def level0(run_dir: Path) -> dict[str, dict[str, Any]]:
    status = json.loads((run_dir / "status.json").read_text())
    return {r["branch"]: r for r in status["levels"] if r["level"] == 0}


def transfer_seed(
    seed: int, level: int | None, root: Path, source: Path, high: Path | None
) -> dict[str, Any]:
    """The ticket of `source`'s `level` (its best when None) on the digits 5-9: from its rewind
    weights beside a random mask (and the dense network once per seed), and from its final weights."""
    tag = "best" if level is None else f"l{level}"
    chosen: dict[str, Any] = {} if level is None else {"level": level}
    controls = ["dense", "random-prune"] if level is None else ["random-prune"]
    rewind = lth_run(
        "transfer-digits.yaml", f"high-{tag}-seed{seed}", seed, root, high, run=source.name,
        controls=controls, **chosen,
    )  # fmt: skip
    data = high or rewind / "data"
    final = lth_run(
        "transfer-digits.yaml", f"final-{tag}-seed{seed}", seed, root, data, run=source.name,
        weights="final", controls=[], **chosen,
    )  # fmt: skip
    searched = json.loads((source / "status.json").read_text())
    source_level = searched["best"]["level"] if level is None else level
    source_row = next(r for r in searched["levels"] if (r["level"], r["branch"]) == (source_level, "main"))
    rows = level0(rewind)
    return {
        "data": data,
        "source": f"L{source_level}, {source_row['density'] * 100:.1f}%, {source_row['top1']:.1f}",
        "density": rows["main"]["density"],
        "ticket": rows["main"]["top1"],
        "final": level0(final)["main"]["top1"],
        "random_prune": rows["random-prune"]["top1"],
        "dense": rows["dense"]["top1"] if "dense" in rows else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--levels", type=int, nargs="*", default=[7], help="source levels to transfer besides the best"
    )
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "bench-transfer")
    parser.add_argument("--rewind-to", default="0", help="the search's spec.pruning.rewindTo (0, 1ep, ...)")
    args = parser.parse_args()
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    table: dict[int | None, list[dict[str, Any]]] = {level: [] for level in [None, *args.levels]}
    low: Path | None = None
    high: Path | None = None
    for seed in args.seeds:
        source = lth_run("digits-0to4.yaml", f"low-seed{seed}", seed, root, low, args.rewind_to)
        low = low or source / "data"
        for level, results in table.items():
            results.append(transfer_seed(seed, level, root, source, high))
            high = high or results[-1]["data"]
            if level is not None:
                results[-1]["dense"] = table[None][-1]["dense"]
    print(
        "\n| source level | seed | source ticket: level, density, top-1 on 0-4 | density on 5-9 "
        "| transferred ticket (rewind weights) | transferred ticket (final weights) | dense | random mask |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    keys = ("ticket", "final", "dense", "random_prune")
    for level, results in table.items():
        name = "best" if level is None else str(level)
        for seed, r in zip(args.seeds, results, strict=True):
            scores = " | ".join(f"{r[key]:.1f}" for key in keys)
            print(f"| {name} | {seed} | {r['source']} | {r['density'] * 100:.2f}% | {scores} |")
        cells = []
        for key in keys:
            values = [r[key] for r in results]
            cells.append(f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})")
        print(f"| {name} | mean (range) | | | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
