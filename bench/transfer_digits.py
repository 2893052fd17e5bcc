"""What a transferred ticket is worth, through the real pipeline: the digits 0-4 to 5-9.

    .venv/bin/python -m bench.transfer_digits [--seeds 0 1 2]

Per seed: examples/digits-0to4.yaml searches the digits 0-4 (IMP to 5.5 %), then
examples/transfer-digits.yaml trains its best ticket on the digits 5-9 beside a
dense network and a random mask with the ticket's density in every layer (both
from a fresh init). Spark runs once per data set; later seeds reuse the shards
as `prepared` data. Prints top-1 on the target per seed and as mean (range).
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


def lth_run(example: str, name: str, seed: int, root: Path, prepared: Path | None, **ticket: Any) -> Path:
    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["training"]["seed"] = seed
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


def summarise(source: Path, target: Path) -> dict[str, float]:
    searched = json.loads((source / "status.json").read_text())
    moved = json.loads((target / "status.json").read_text())
    rows = {r["branch"]: r for r in moved["levels"] if r["level"] == 0}
    return {
        "source_level": searched["best"]["level"],
        "source_density": searched["best"]["density"],
        "source_top1": searched["best"]["top1"],
        "source_dense": searched["denseTop1"],
        "density": rows["main"]["density"],
        "ticket": rows["main"]["top1"],
        "dense": rows["dense"]["top1"],
        "random_prune": rows["random-prune"]["top1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "bench-transfer")
    args = parser.parse_args()
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    results = []
    low: Path | None = None
    high: Path | None = None
    for seed in args.seeds:
        source = lth_run("digits-0to4.yaml", f"low-seed{seed}", seed, root, low)
        target = lth_run("transfer-digits.yaml", f"high-seed{seed}", seed, root, high, run=source.name)
        low, high = low or source / "data", high or target / "data"
        results.append(summarise(source, target))
    print(
        "\n| seed | source: level, density, top-1 (dense) on 0-4 | transferred ticket | dense | random mask |"
    )
    print("| --- | --- | --- | --- | --- |")
    for seed, r in zip(args.seeds, results, strict=True):
        source = (
            f"L{r['source_level']:.0f}, {r['source_density'] * 100:.1f}%, {r['source_top1']:.1f} "
            f"({r['source_dense']:.1f})"
        )
        print(f"| {seed} | {source} | {r['ticket']:.1f} | {r['dense']:.1f} | {r['random_prune']:.1f} |")
    cells = []
    for key in ("ticket", "dense", "random_prune"):
        values = [r[key] for r in results]
        cells.append(f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})")
    print(f"| mean (range) | | {cells[0]} | {cells[1]} | {cells[2]} |")
    densities = sorted({round(r["density"] * 100, 2) for r in results})
    print(f"\ndensity of the transferred network on 5-9 (dense new head included): {densities} %")


if __name__ == "__main__":
    main()
