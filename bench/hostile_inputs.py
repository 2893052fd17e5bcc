"""Peak memory of the Spark job on the demo archives, clean and with ~10 KB of hostile additions.

    .venv/bin/python -m bench.hostile_inputs [--code-root DIR] [--sparse-gib 2] [--pixels 20000]

The additions, all in class 0's tar of `python -m lth_spark.demo`'s archives (the devkit's
counts include them): a GNU sparse member of 1 KB that declares `--sparse-gib` GiB, and a 1 KB
JPEG whose header claims `--pixels` x `--pixels`. Each input is preprocessed by the real job,
`python -m lth_spark --master local[2]`, run from the packages under `--code-root` (this
checkout by default; an export of another commit, `git archive BASE | tar -x -C DIR`, to compare
with it). The peak is that of the job's whole process tree (driver, JVM, Python workers),
sampled from /proc every 0.1 s, so a short spike between two samples can be missed. Not a test:
prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from lth_spark.demo import mnist_layout, rgb_jpeg, write_layout
from lth_spark.inputs import TRAIN_TAR
from tests.spark.hostile import gnu_sparse_member, jpeg_claiming, tar_of, tar_with

ROOT = Path(__file__).resolve().parents[1]


def hostile_archives(folder: Path, sparse_gib: int, pixels: int) -> int:
    """The demo's archives with the two members in class 0; the bytes they add."""
    layout = mnist_layout()
    huge = jpeg_claiming(rgb_jpeg(np.full((28, 28), 128, dtype=np.uint8)), pixels, pixels)
    wnid = layout.wnids[0]
    layout.train[0] += [(f"{wnid}_huge.JPEG", huge), (f"{wnid}_sparse.JPEG", b"")]
    write_layout(layout, folder)
    with tarfile.open(folder / TRAIN_TAR) as outer:
        tars = [(m.name, outer.extractfile(m).read()) for m in outer.getmembers()]  # type: ignore[union-attr]
    kept = [f for f in layout.train[0] if not f[0].endswith("_sparse.JPEG")]
    sparse = gnu_sparse_member(f"{wnid}_sparse.JPEG", sparse_gib << 30)
    tars[0] = (tars[0][0], tar_with(kept, sparse))
    (folder / TRAIN_TAR).write_bytes(tar_of(tars))
    return len(huge) + len(sparse)


def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent, pages = int(fields[1]), int(fields[21])
        children.setdefault(parent, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack += children.get(current, [])
    return total


def measure(code_root: Path, archives: Path, out: Path) -> dict[str, object]:
    # The spec as written, not this checkout's wire form: another commit's job reads it too.
    spec = {"dataset": {"path": str(archives), "imageSize": 28, "resize": "squash"}}
    paths = os.pathsep.join(str(code_root / p) for p in ("operator", "spark"))
    env = {**os.environ, "PYTHONPATH": paths, "PYSPARK_PYTHON": sys.executable}
    command = [sys.executable, "-m", "lth_spark", "--input", str(archives), "--output", str(out)]
    command += ["--spec-json", json.dumps(spec), "--master", "local[2]"]
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=code_root)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.1)
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-1:]
    manifest = out / "manifest.json"
    skipped = json.loads(manifest.read_text())["skipped"] if manifest.exists() else []
    return {
        "code": process.returncode,
        "peak_mib": peak / 2**20,
        "seconds": time.monotonic() - started,
        "skipped": [s["reason"][:70] for s in skipped],
        "last_line": tail[0][:160] if tail else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code-root", type=Path, default=ROOT)
    parser.add_argument("--sparse-gib", type=int, default=2)
    parser.add_argument("--pixels", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lth-hostile-") as folder:
        base = Path(folder)
        clean, hostile = base / "clean", base / "hostile"
        write_layout(mnist_layout(), clean)
        added = hostile_archives(hostile, args.sparse_gib, args.pixels)
        print(f"code: {args.code_root}; hostile additions: {added} bytes")
        print("| input | exit | peak RSS of the job's processes | seconds | skipped |")
        print("| --- | --- | --- | --- | --- |")
        for name, archives in (("demo", clean), ("demo + hostile", hostile)):
            result = measure(args.code_root, archives, base / f"out-{name.replace(' ', '')}")
            skipped = "; ".join(result["skipped"]) or "-"  # type: ignore[arg-type]
            print(
                f"| {name} | {result['code']} | {result['peak_mib']:.0f} MiB | "
                f"{result['seconds']:.0f} | {skipped} |"
            )
            if result["code"]:
                print(f"  last line: {result['last_line']}")


if __name__ == "__main__":
    main()
