"""Spark job vs a plain multiprocessing pool doing the identical job on the same files and cores.

    PYTHONPATH=operator:spark .venv/bin/python bench/bench_spark.py [--images 2400] [--cores 2]

Both sides run `lth_spark.job.run` unchanged (plan, decode + resize + encode per unit,
pack shards, manifest); only the mapper differs: Spark `local[N]` (one task per unit)
or `multiprocessing.Pool(N).map`. So the ratio is what Spark costs over plain Python.
Input: synthetic 469x387 q90 JPEGs (~118 KB, 64 distinct images under different names)
in the ImageNet layout, 300 per class tar. Each measurement runs in its own process,
so peak RSS (the JVM's VmHWM, each Python worker's ru_maxrss) belongs to that run only.
Not a test: prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from lth.api import DatasetSpec, PreprocessingSpec
from lth_spark.demo import Layout, write_layout
from lth_spark.images import Geometry, process_image
from lth_spark.job import PROCESS_STEP, Job, Mapper, run

PER_CLASS = 300
DISTINCT = 64


def synthetic_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """Smooth color waves plus noise: about the entropy (and size) of an ImageNet photo at q90."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:387, 0:469]
    images = []
    for _ in range(count):
        phase = rng.uniform(0, 6.28, 3)
        waves = np.stack([128 + 100 * np.sin(xx / 23 + p) * np.cos(yy / 31 - p) for p in phase], axis=-1)
        pixels = (waves + rng.normal(0, 9, waves.shape)).clip(0, 255).astype(np.uint8)
        images.append(simplejpeg.encode_jpeg(pixels, quality=90, colorspace="RGB"))
    return images


def build_input(root: Path, images: int) -> None:
    jpegs = synthetic_jpegs(DISTINCT)
    classes = images // PER_CLASS
    layout = Layout([f"n{c:08d}" for c in range(classes)], [f"class {c}" for c in range(classes)])
    for c in range(classes):
        layout.train[c] = [
            (f"n{c:08d}_{i}.JPEG", jpegs[(c * PER_CLASS + i) % DISTINCT]) for i in range(PER_CLASS)
        ]
    layout.val = [(c, jpegs[c % DISTINCT]) for c in range(classes)]
    write_layout(layout, root)


def _timed(mapper: Mapper, steps: dict[str, Any]) -> Mapper:
    def timed(
        function: Callable[[Any], dict[str, Any]], items: Sequence[Any], what: str
    ) -> list[dict[str, Any]]:
        started = time.perf_counter()
        results = mapper(function, items, what)
        steps[what] = {"seconds": time.perf_counter() - started, "results": results}
        return results

    return timed


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its live descendants (from /proc), seconds."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        ticks[pid] = int(fields[11]) + int(fields[12])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def measure(engine: str, input: Path, output: Path, cores: int, size: int, resize: str) -> dict[str, Any]:
    """One job, in this process; returns timings and peak memory."""
    dataset = DatasetSpec(path=str(input), image_size=size, resize=resize)  # type: ignore[arg-type]
    job = Job(input, output, dataset, PreprocessingSpec(jpeg_quality=90))
    steps: dict[str, Any] = {}
    started = time.perf_counter()
    if engine == "spark":
        from lth_spark.spark import SparkMapper, session

        spark = session(f"local[{cores}]", app_name="bench")
        spark.sparkContext.parallelize(range(cores), cores).count()  # start the Python workers
        startup = time.perf_counter() - started
        jvm_pid = spark.sparkContext._jvm.ProcessHandle.current().pid()
        cpu = tree_cpu_seconds(os.getpid())
        started = time.perf_counter()
        manifest = run(job, lambda: _timed(SparkMapper(spark.sparkContext), steps))
        seconds = time.perf_counter() - started
        cpu = tree_cpu_seconds(os.getpid()) - cpu
        status = Path(f"/proc/{jvm_pid}/status").read_text()
        jvm_peak = (
            int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) * 1024
        )
        spark.stop()
    else:
        with multiprocessing.get_context("fork").Pool(cores) as pool:
            pool.map(abs, range(cores))  # start the workers
            startup = time.perf_counter() - started
            cpu = tree_cpu_seconds(os.getpid())
            started = time.perf_counter()
            manifest = run(job, lambda: _timed(lambda f, items, what: pool.map(f, items, chunksize=1), steps))
            seconds = time.perf_counter() - started
            cpu = tree_cpu_seconds(os.getpid()) - cpu
        jvm_peak = 0
    images = sum(s.images for s in manifest.splits.values())
    process = steps[PROCESS_STEP]
    return {
        "engine": engine,
        "images": images,
        "size": size,
        "startup_s": startup,
        "job_s": seconds,
        "cpu_s": cpu,
        "process_s": process["seconds"],
        "worker_peak_rss": max(r["peak_rss_bytes"] for r in process["results"]),
        "jvm_peak_rss": jvm_peak,
        "load_before": os.getloadavg()[0],
    }


def _pillow_path(data: bytes, geometry: Geometry) -> None:
    """The prep before issue 27, as the baseline: a full decode, Pillow's antialiased bilinear."""
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGBX")
    height, width = pixels.shape[:2]
    image = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
    out = image.resize(
        geometry.output_size(width, height), Image.Resampling.BILINEAR, box=geometry.source_box(width, height)
    )
    simplejpeg.encode_jpeg(np.asarray(out), quality=90, colorspace="RGBX", colorsubsampling="420")
    out.histogram()


GEOMETRIES = {
    "224 center-crop": Geometry(224, "center-crop", 256),
    "227 squash": Geometry(227, "squash"),
    "whole 256 (max 512)": Geometry(256, "whole", 256, 512),
}


def single_core(jpegs: list[bytes], count: int = 300) -> dict[str, float]:
    """CPU ms per image, in this process, interleaved: a bare decode, process_image in each
    geometry, and the Pillow path it replaced; and the decode alone at each n/8 DCT scale."""
    height, width = simplejpeg.decode_jpeg_header(jpegs[0])[:2]
    runs: dict[str, Callable[[bytes], object]] = {"decode": simplejpeg.decode_jpeg}
    for name, geometry in GEOMETRIES.items():
        runs[name] = partial(process_image, geometry=geometry, quality=90)
        runs[f"{name}, Pillow"] = partial(_pillow_path, geometry=geometry)
    for n in range(1, 8):
        size = {"min_height": -(-height * n // 8), "min_width": -(-width * n // 8)}
        runs[f"decode {n}/8"] = partial(simplejpeg.decode_jpeg, **size)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(3):  # rounds, so that a change in the machine's load hits every figure alike
        for name, run_one in runs.items():
            started = time.process_time()
            for n in range(count // 3):
                run_one(jpegs[n % len(jpegs)])
            times[name].append((time.process_time() - started) / (count // 3) * 1e3)
    return {name: sorted(values)[1] for name, values in times.items()}


def _report_single_core(jpegs: list[bytes], what: str) -> None:
    ms = single_core(jpegs)
    decode = ms["decode"]
    print(f"\nOne process, {what}: a bare simplejpeg decode {decode:.2f} ms of CPU per image")
    print("| output | process_image ms | / decode | Pillow path (before) ms | / decode |")
    print("| --- | --- | --- | --- | --- |")
    for name in GEOMETRIES:
        new, old = ms[name], ms[f"{name}, Pillow"]
        print(f"| {name} | {new:.2f} | **{new / decode:.2f}x** | {old:.2f} | {old / decode:.2f}x |")
    scales = " | ".join(f"{n}/8 {ms[f'decode {n}/8'] / decode:.2f}x" for n in range(1, 8))
    print(f"\nDecode at n/8 of the size over a full decode: {scales}")


def _child(arguments: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *arguments], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-4000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def calibrate() -> None:
    """The per-image figures: the bench's 469x387 q90 files (4:4:4, simplejpeg's default) and the
    same pictures at 4:2:0 (what most cameras write), and large 1024x768 ones."""
    files = synthetic_jpegs(16, seed=1)
    _report_single_core(files, "469x387 q90 4:4:4 (~118 KB, the job's input)")
    at_420 = [
        simplejpeg.encode_jpeg(simplejpeg.decode_jpeg(f), quality=90, colorsubsampling="420") for f in files
    ]
    _report_single_core(at_420, "469x387 q90 4:2:0 (~60 KB)")
    large = [
        simplejpeg.encode_jpeg(
            cv2.resize(simplejpeg.decode_jpeg(f), (1024, 768)), quality=90, colorsubsampling="420"
        )
        for f in files[:8]
    ]
    _report_single_core(large, "1024x768 q90 4:2:0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2400, help="train images at 1x (2x doubles them)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--calibrate-only", action="store_true", help="only the per-image figures")
    parser.add_argument("--child", nargs=6, metavar=("ENGINE", "INPUT", "OUTPUT", "CORES", "SIZE", "RESIZE"))
    arguments = parser.parse_args()
    if arguments.child:
        engine, input, output, cores, size, resize = arguments.child
        result = measure(engine, Path(input), Path(output), int(cores), int(size), resize)
        print(json.dumps(result))
        return
    if arguments.calibrate_only:
        calibrate()
        return

    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    try:
        for scale in (1, 2):
            build_input(work / f"in{scale}x", arguments.images * scale)
        runs = [  # ABBA order at 1x, so a drift in the machine's load hits both engines alike
            ("pool", 1, 224, "center-crop"),
            ("spark", 1, 224, "center-crop"),
            ("spark", 1, 227, "squash"),
            ("pool", 1, 227, "squash"),
            ("spark", 2, 224, "center-crop"),
            ("pool", 2, 224, "center-crop"),
        ]
        results = []
        for n, (engine, scale, size, resize) in enumerate(runs):
            output = work / f"out{n}"
            result = _child(
                [engine, str(work / f"in{scale}x"), str(output), str(arguments.cores), str(size), resize]
            )
            result["scale"] = scale
            results.append(result)
            shutil.rmtree(output)
            print(json.dumps(result), file=sys.stderr)
        _report(results, arguments.cores)
        calibrate()
    finally:
        shutil.rmtree(work)


def _report(results: list[dict[str, Any]], cores: int) -> None:
    mib = 1 << 20
    print(
        "| engine | files | output | job s | images/s/core (job) | images/s/core (decode+resize+encode) |"
        " images per CPU-second | startup s | peak RSS: JVM / Python worker MiB | load avg |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['engine']} | {r['images']} ({r['scale']}x) | {r['size']} | {r['job_s']:.2f} "
            f"| {r['images'] / r['job_s'] / cores:.0f} | {r['images'] / r['process_s'] / cores:.0f} "
            f"| {r['images'] / r['cpu_s']:.0f} | {r['startup_s']:.1f} "
            f"| {r['jvm_peak_rss'] / mib:.0f} / {r['worker_peak_rss'] / mib:.0f} "
            f"| {r['load_before']:.1f} |"
        )
    by = {(r["engine"], r["scale"], r["size"]): r for r in results}
    for scale, size in ((1, 224), (1, 227), (2, 224)):
        spark, pool = by[("spark", scale, size)], by[("pool", scale, size)]
        print(
            f"\nSpark / pool at {scale}x, {size}: throughput (job) {pool['job_s'] / spark['job_s']:.2f}x, "
            f"decode+resize+encode step {pool['process_s'] / spark['process_s']:.2f}x, "
            f"CPU efficiency {pool['cpu_s'] / spark['cpu_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
