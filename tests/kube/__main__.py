"""`python -m tests.kube serve`: an emulated cluster on 127.0.0.1, to try kubectl or the operator by hand."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from pathlib import Path

from tests.kube.cluster import running
from tests.kube.resources import kinds_from_file, project_kinds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kube", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve until interrupted (Ctrl-C)")
    serve.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path("emulator.kubeconfig"),
        help="where to write the kubeconfig (default: %(default)s)",
    )
    serve.add_argument("--port", type=int, default=None, help="default: a free port")
    serve.add_argument("--crd", type=Path, action="append", default=[], help="serve more CRDs (repeatable)")
    args = parser.parse_args(argv)

    kinds = project_kinds() + [kind for path in args.crd for kind in kinds_from_file(path)]
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with running(args.kubeconfig.resolve(), kinds, port=args.port) as cluster:
        print(f"Kubernetes API emulator at {cluster.url}, serving {len(kinds)} kinds", flush=True)
        print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()


if __name__ == "__main__":
    main()
