"""The scale rehearsal: Spark prep of ImageNet-count archives, a kill and resume, the trainer's input.

    PYTHONPATH=operator:spark:trainer:. .venv/bin/python -m bench.bench_scale prep IN OUT [--kill-at 0.5]
    ... bench_scale compare OUT_A OUT_B        # every file byte for byte
    ... bench_scale index OUT                  # time and memory to index the train shards, per-rank splits
    ... bench_scale loader OUT                 # one epoch of the train loader vs decode-only, same shards

`prep` runs the job as `lth run` does (`spark-submit --master local[2] --driver-memory 2g`
`lth_spark/__main__.py ...`) in its own process group, and samples every process of the
tree twice a second: peak RSS (VmHWM) of the driver's JVM, the driver's Python, the
Python worker daemon and each Python worker, and the CPU time of the whole tree (the
larger of the reaped children's rusage and the sum of every process's last sample).
`--kill-at F` SIGKILLs the whole group once F of the units have their sidecar, then runs
the job again and reports how many units the rerun did. Input: `bench/imagenet_archives.py`.
Prints one JSON line per measurement; not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MAIN_FILE = REPO / "spark" / "lth_spark" / "__main__.py"
CLOCK = os.sysconf("SC_CLK_TCK")


def spec_json(image_size: int, shard_mb: int) -> str:
    from lth.api import RunSpec
    from lth.api.workload import spec_json as wire

    spec = RunSpec.model_validate(
        {
            "dataset": {"format": "imagenet", "path": "/in", "imageSize": image_size, "resize": "squash"},
            "preprocessing": {"shardSizeMb": shard_mb},
        }
    )
    return wire(spec)


def _proc(pid: int) -> dict[str, Any] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
    return {
        "ppid": int(fields[1]),
        "cpu": (int(fields[11]) + int(fields[12])) / CLOCK,
        "hwm_mib": int(hwm.group(1)) / 1024 if hwm else 0.0,
        "cmd": cmdline,
    }


def _tree(root: int) -> dict[int, dict[str, Any]]:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _proc(int(entry))) is not None:
            procs[int(entry)] = info
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            found[pid] = procs[pid]
            todo += [p for p, info in procs.items() if info["ppid"] == pid]
    return found


def _kind(pid: int, info: dict[str, Any], tree: dict[int, dict[str, Any]]) -> str:
    cmd = info["cmd"]
    if "java" in cmd.split(" ", 1)[0]:
        return "jvm"
    if "pyspark.daemon" in cmd or "pyspark/daemon" in cmd:
        parent = tree.get(info["ppid"], {}).get("cmd", "")
        return (
            "python worker" if "pyspark.daemon" in parent or "pyspark/daemon" in parent else "python daemon"
        )
    if "lth_spark" in cmd:
        return "driver python"
    return "other"


def run_prep(
    input: Path, output: Path, image_size: int, shard_mb: int, kill_at: float | None
) -> dict[str, Any]:
    """One spark-submit run, sampled; killed with SIGKILL at `kill_at` of the units if given."""
    argv = [
        str(VENV_BIN / "spark-submit"),
        "--master", "local[2]",
        "--driver-memory", "2g",
        "--conf", "spark.ui.enabled=false",
        str(MAIN_FILE),
        "--input", str(input),
        "--output", str(output),
        "--spec-json", spec_json(image_size, shard_mb),
    ]  # fmt: skip
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    log_path = output.parent / f"{output.name}.{int(time.time())}.log"
    output.parent.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    peaks: dict[str, float] = {}
    last_cpu: dict[int, float] = {}
    kinds: dict[int, str] = {}
    units_total: int | None = None
    killed_at_units: int | None = None
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        while process.poll() is None:
            tree = _tree(process.pid)
            for pid, info in tree.items():
                kind = _kind(pid, info, tree)
                peaks[kind] = max(peaks.get(kind, 0.0), info["hwm_mib"])
                last_cpu[pid] = info["cpu"]
                if kind != "other" or pid not in kinds:  # an exiting process has no command line
                    kinds[pid] = kind
            if units_total is None:
                match = re.search(rb"(\d+) units of work \((\d+) already done\)", log_path.read_bytes())
                if match:
                    units_total = int(match.group(1))
            if kill_at is not None and units_total:
                done = _units_done(output)
                if done >= kill_at * units_total:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    killed_at_units = done
                    break
            time.sleep(0.5)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = log_path.read_text(errors="replace")
    match = re.search(r"(\d+) units of work \((\d+) already done\)", text)
    result: dict[str, Any] = {
        "output": str(output),
        "rc": process.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(max(reaped, sum(last_cpu.values())), 1),
        "peak_rss_mib": {k: round(v) for k, v in sorted(peaks.items())},
        "cpu_s_by_kind": {
            k: round(sum(c for pid, c in last_cpu.items() if kinds[pid] == k), 1)
            for k in sorted(set(kinds.values()))
        },
        "units": int(match.group(1)) if match else None,
        "units_already_done": int(match.group(2)) if match else None,
        "log": str(log_path),
        "load_avg": os.getloadavg(),
    }
    if killed_at_units is not None:
        result["killed_at_units"] = killed_at_units
        result["work_files_left"] = sorted(p.name for p in output.rglob("*.tmp"))[:10]
        return result
    manifest = output / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        images = sum(s["images"] for s in data["splits"].values())
        result |= {
            "images": images,
            "cpu_ms_per_image": round(1000 * result["cpu_s"] / images, 3),
            "worker_cpu_ms_per_image": round(
                1000 * sum(v for k, v in result["cpu_s_by_kind"].items() if k.startswith("python ")) / images,
                3,
            ),
            "manifest_bytes": manifest.stat().st_size,
            "shards": {
                split: {
                    "count": len([s for s in data["shards"] if s["split"] == split]),
                    "mib": round(sum(s["bytes"] for s in data["shards"] if s["split"] == split) / 2**20, 1),
                }
                for split in ("train", "val", "test")
            },
            "skipped": len(data["skipped"]),
        }
        for line in text.splitlines():
            if "tasks," in line and "images in" in line:
                result.setdefault("steps", []).append(line.split(" lth_spark ", 1)[-1])
    return result


def _units_done(output: Path) -> int:
    work = output / ".work"
    if not work.is_dir():
        return 0
    return sum(1 for p in work.iterdir() if p.suffix == ".json" and p.name != "parameters.json")


def digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.file_digest(p.open("rb"), "sha256").hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def compare(a: Path, b: Path) -> dict[str, Any]:
    da, db = digest_tree(a), digest_tree(b)
    differ = sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))
    return {"files_a": len(da), "files_b": len(db), "identical": not differ, "differ": differ[:10]}


def _vm(field: str) -> float:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def index(data: Path) -> list[dict[str, Any]]:
    """Time and memory to index the train shards (as the main rank does), to load the saved
    index (as every other rank does), and the per-rank step counts at 1x4, 2x4, 8x4."""
    import numpy as np

    from lth_trainer.data.index import index_key, index_split, load_index, load_manifest, save_index
    from lth_trainer.data.loader import TrainBatches, eval_batches

    results = []
    manifest = load_manifest(data)
    base_rss, base_hwm = _vm("VmRSS"), _vm("VmHWM")
    cpu0, t0 = time.process_time(), time.perf_counter()
    train = index_split(data, manifest, "train")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    arrays = train.shard_of.nbytes + train.offset.nbytes + train.size.nbytes + train.label.nbytes
    results.append(
        {
            "what": "index_split train",
            "images": len(train),
            "shards": len(train.shards),
            "wall_s": round(seconds, 2),
            "cpu_s": round(cpu, 2),
            "index_arrays_mib": round(arrays / 2**20, 1),
            "peak_rss_growth_mib": round(_vm("VmHWM") - max(base_hwm, base_rss), 1),
            "rss_after_mib": round(_vm("VmRSS"), 1),
            "rss_before_mib": round(base_rss, 1),
        }
    )
    saved = data.parent / f"{data.name}.index-train.npz"
    key = index_key(data, manifest, "train")
    save_index(saved, train, key)
    t0 = time.perf_counter()
    loaded = load_index(saved, key, data, manifest, "train")
    assert loaded is not None and len(loaded) == len(train)
    results.append(
        {
            "what": "load_index train (other ranks)",
            "wall_s": round(time.perf_counter() - t0, 2),
            "file_mib": round(saved.stat().st_size / 2**20, 1),
        }
    )
    val = index_split(data, manifest, "val")
    for pods, gpus in ((1, 4), (2, 4), (8, 4)):
        world = pods * gpus
        for batch in (1024, 4096):
            steps = []
            for rank in range(world):
                plan = TrainBatches(len(train), batch, rank, world, seed=0)
                count = sum(1 for b in plan.from_step(0, 1) if len(b) == batch // world)
                steps.append(count)
            evals = [len(eval_batches(len(val), batch // world, r, world)) for r in range(world)]
            results.append(
                {
                    "what": f"per-rank split {pods}x{gpus}",
                    "global_batch": batch,
                    "train_steps_per_rank": sorted(set(steps)),
                    "dropped_tail_images": len(train) - plan.steps_per_epoch * batch,
                    "eval_batches_per_rank": sorted(set(evals)),
                    "eval_images_per_rank": sorted({len(range(r, len(val), world)) for r in range(world)}),
                }
            )
    del np
    return results


def loader(data: Path, batch: int, limit: int | None) -> list[dict[str, Any]]:
    """One epoch of the trainer's train loader (its DataLoader, batch sampler and collate:
    pread, decode, crop boxes and flips; no model, no workers) against a bare pread + decode
    of the same samples, batch by batch in alternating order, in CPU seconds of this process
    (so the other load on the machine hits both sides alike)."""
    import simplejpeg

    from lth_trainer.data.index import index_split, load_manifest
    from lth_trainer.data.loader import ShardDataset, TrainBatches
    from lth_trainer.data.loader import loader as train_loader

    manifest = load_manifest(data)
    train = index_split(data, manifest, "train")
    dataset = ShardDataset(train, manifest.image_size, augment=True, seed=0)
    plan = TrainBatches(len(train), batch, 0, 1, seed=0)
    steps = plan.steps_per_epoch if limit is None else min(plan.steps_per_epoch, limit // batch)
    batches = list(itertools.islice(plan.from_step(0, 1), steps))
    fetched = iter(train_loader(dataset, iter(batches), 0, False))
    spent = {"loader": 0.0, "decode": 0.0}
    images = 0
    wall = time.perf_counter()

    def decode(items: list[tuple[int, int]]) -> None:
        t0 = time.process_time()
        for _, i in items:
            simplejpeg.decode_jpeg(dataset.read(i), colorspace="RGB")
        spent["decode"] += time.process_time() - t0

    def load() -> None:
        nonlocal images
        t0 = time.process_time()
        images += len(next(fetched)[0])
        spent["loader"] += time.process_time() - t0

    for step, items in enumerate(batches):
        if step % 2:
            decode(items)
            load()
        else:
            load()
            decode(items)
    return [
        {
            "what": "train loader vs decode-only, one epoch, images per CPU-second",
            "images": images,
            "image_size": manifest.image_size,
            "loader": round(images / spent["loader"]),
            "decode_only": round(images / spent["decode"]),
            "ratio": round(spent["decode"] / spent["loader"], 3),
            "loader_cpu_s": round(spent["loader"], 1),
            "decode_cpu_s": round(spent["decode"], 1),
            "wall_s_both": round(time.perf_counter() - wall, 1),
        }
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scale")
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prep")
    prep.add_argument("input", type=Path)
    prep.add_argument("output", type=Path)
    prep.add_argument("--image-size", type=int, default=16)
    prep.add_argument("--shard-mb", type=int, default=64)
    prep.add_argument(
        "--kill-at", type=float, default=None, help="SIGKILL at this fraction of units, then rerun"
    )
    cmp = commands.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    idx = commands.add_parser("index")
    idx.add_argument("data", type=Path)
    load = commands.add_parser("loader")
    load.add_argument("data", type=Path)
    load.add_argument("--batch", type=int, default=256)
    load.add_argument("--limit", type=int, default=None, help="images (default: the whole epoch)")
    arguments = parser.parse_args()
    if arguments.command == "prep":
        results = [
            run_prep(
                arguments.input, arguments.output, arguments.image_size, arguments.shard_mb, arguments.kill_at
            )
        ]
        if arguments.kill_at is not None:
            results.append(
                run_prep(arguments.input, arguments.output, arguments.image_size, arguments.shard_mb, None)
            )
    elif arguments.command == "compare":
        results = [compare(arguments.a, arguments.b)]
    elif arguments.command == "index":
        results = index(arguments.data)
    else:
        results = loader(arguments.data, arguments.batch, arguments.limit)
    for result in results:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
