"""The rewind point chosen by instability analysis (rewindTo auto) against fixed ones, on the demo
digits, through the real pipeline (Spark shards, trainer, planner via `lth run`); and one
torchvision network other than a ResNet through the same pipeline.

    nice -n 5 .venv/bin/python -m bench.rewind_auto [--seeds 0 1 2] [--variants auto fixed-0 ...]
    .venv/bin/python -m bench.rewind_auto --no-run      # only summarise the runs already there

Every variant runs examples/demo.yaml (smallcnn, Adam, 10 epochs, IMP at 0.2 to 5.5 %, both
controls at 21 % and 5.5 %) with each seed; the first run preprocesses the archives with Spark,
the others reuse its shards. `auto` is rewindTo auto with the default ladder (0, 0.25, 0.5, 1, 2
epochs, threshold 2 points, 11 points on the path); `fixed-0`, `fixed-1ep`, `fixed-2ep` set the
point. `mobilenet` is fixed-0 with spec.model.arch mobilenet_v3_small (torchvision's, 28 px).
Per variant and density it records the ticket's top-1, both controls, the cost in dense-run
equivalents (status.cost.ticket: the levels its mask comes from, its own training and, for
auto, the analysis) and, for auto, the point chosen and the instability table; it writes
bench/rewind_auto.json and prints the Markdown tables of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.demo_science import demo_run, timed_run

ROOT = Path(__file__).resolve().parents[1]
DENSITIES = (0.8**7, 0.8**13)
"""21 % and 5.5 %: levels 7 and 13 at fraction 0.2, where the controls run."""
VARIANTS = ("auto", "fixed-0", "fixed-1ep", "fixed-2ep")


def variant_spec(doc: dict[str, Any], variant: str) -> dict[str, Any]:
    """examples/demo.yaml changed as the variant says."""
    pruning = doc["spec"]["pruning"]
    if variant == "auto":
        pruning["rewindTo"] = "auto"
    elif variant.startswith("fixed-"):
        pruning["rewindTo"] = variant.removeprefix("fixed-")
    elif variant == "mobilenet":
        doc["spec"]["model"]["arch"] = "mobilenet_v3_small"
    else:
        raise SystemExit(f"unknown variant {variant!r}: auto, fixed-<point>, mobilenet")
    return doc


def run_one(variant: str, seed: int, root: Path, prepared: Path | None) -> float:
    """One `lth run` of the variant; its wall time in seconds (0 when it had finished)."""
    name = f"rewind-{variant}-s{seed}"
    return timed_run(name, root, lambda: variant_spec(demo_run(name, seed, prepared), variant))


def summarise(variant: str, seed: int, root: Path) -> list[dict[str, Any]]:
    """One record per ticket density of one run."""
    run_dir = root / "runs" / f"rewind-{variant}-s{seed}"
    status = json.loads((run_dir / "status.json").read_text())
    wall_file = run_dir / "wall_seconds"
    rows = {(r["level"], r["branch"]): r for r in status["levels"] if r["phase"] == "Succeeded"}
    stability = status.get("stability")
    records = []
    for density in DENSITIES:
        level = next(lv for (lv, b), r in rows.items() if b == "main" and abs(r["density"] - density) < 0.002)
        path_cost = sum(rows[(lv, "main")]["cost"] for lv in range(level + 1))
        analysis = stability["cost"] if stability else 0.0
        records.append(
            {
                "variant": variant,
                "seed": seed,
                "density": rows[(level, "main")]["density"],
                "dense": status["denseTop1"],
                "ticket": rows[(level, "main")]["top1"],
                "reinit": rows[(level, "random-reinit")]["top1"],
                "randomMask": rows[(level, "random-prune")]["top1"],
                "cost": round(path_cost + analysis, 3),
                "analysisCost": analysis,
                "chosen": stability["chosen"]["rewindTo"] if stability else None,
                "instability": [(p["epochs"], p["instability"]) for p in stability["points"]]
                if stability
                else None,
                "wallSeconds": float(wall_file.read_text()) if wall_file.exists() else None,
            }
        )
    return records


def mean_range(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"


HEADER = (
    "| variant | density | ticket top-1 | random reinit | random mask | ticket - best control, "
    "worst seed | ticket cost, dense-run equivalents | rewind point chosen (auto) | wall time per run, s |"
)


def table(records: list[dict[str, Any]], variants: list[str]) -> str:
    lines = [HEADER, "|" + " --- |" * 9]
    for variant in variants:
        for density in DENSITIES:
            rows = [r for r in records if r["variant"] == variant and abs(r["density"] - density) < 0.002]
            if not rows:
                continue
            margins = [r["ticket"] - max(r["reinit"], r["randomMask"]) for r in rows]
            chosen = ", ".join(str(r["chosen"]) for r in rows if r["chosen"] is not None)
            walls = [r["wallSeconds"] for r in rows if r["wallSeconds"]]
            wall = f"{statistics.mean(walls):.0f}" if walls else ""
            cells = [mean_range([r[key] for r in rows]) for key in ("ticket", "reinit", "randomMask")]
            cost = statistics.mean(r["cost"] for r in rows)
            lines.append(
                f"| {variant} | {density * 100:.1f}% | {' | '.join(cells)} | {min(margins):+.1f} | "
                f"{cost:.2f} | {chosen} | {wall} |"
            )
    return "\n".join(lines)


def instability_table(records: list[dict[str, Any]]) -> str:
    """Each auto run's measured points: k, instability."""
    lines = [
        "| seed | measured k (epochs): instability, points | chosen | analysis cost |",
        "| --- | --- | --- | --- |",
    ]
    auto = [r for r in records if r["variant"] == "auto" and r["density"] > 0.1]
    for r in sorted(auto, key=lambda r: r["seed"]):
        points = ", ".join(f"{k:g}: {i:.2f}" for k, i in sorted(r["instability"]))
        lines.append(f"| {r['seed']} | {points} | {r['chosen']} | {r['analysisCost']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument(
        "--extra", nargs="*", default=["mobilenet"], help="variants run with the first seed only"
    )
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--no-run", action="store_true", help="only summarise the runs already under ROOT")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--prepared", type=Path, default=None, help="shards of an earlier run (its data/)")
    args = parser.parse_args()
    root = args.root.resolve()
    prepared: Path | None = args.prepared
    records: list[dict[str, Any]] = []
    runs = [(v, s) for s in args.seeds for v in args.variants] + [(v, args.seeds[0]) for v in args.extra]
    for variant, seed in runs:
        run_dir = root / "runs" / f"rewind-{variant}-s{seed}"
        if not args.no_run:
            wall = run_one(variant, seed, root, prepared)
            print(f"{variant} seed {seed}: {wall:.0f} s", flush=True)
        status_file = run_dir / "status.json"
        if not status_file.exists() or json.loads(status_file.read_text()).get("phase") != "Succeeded":
            continue
        prepared = prepared or run_dir / "data"
        records += summarise(variant, seed, root)
        (args.out / "rewind_auto.json").write_text(json.dumps(records, indent=1) + "\n")
    print(table(records, [*args.variants, *args.extra]))
    print()
    print(instability_table(records))


if __name__ == "__main__":
    main()
