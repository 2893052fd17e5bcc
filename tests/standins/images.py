"""The images the stand-in node can pull, as far as the kubelet and a process need them.

An image here is what its Dockerfile says (USER, the commands on its PATH, its
entrypoint) with this machine's own programs behind the commands: the project's
images get `python`, `torchrun`, `lth` and the Spark driver entrypoint from the test venv's
packages under Debian's /usr/bin/python3 (the venv's own python lies under /root,
which another uid cannot enter); alpine gets `nslookup` answered from the pod's
/etc/hosts. Every other name fails to pull, as an image never pushed does.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lth.api import defaults
from lth.api.workload import SPARK_MAIN_IN_IMAGE

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
ALPINE = "alpine:3.10"


@dataclass(frozen=True)
class Image:
    user: str
    """USER as the Dockerfile writes it ("" when it has none: root)"""
    uid: int
    gid: int
    """The primary group of that user in the image's /etc/passwd"""
    path: Path
    """The folder of the image's own commands (first on PATH)"""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def dockerfile_user(name: str) -> str:
    """The last USER of images/<name>/Dockerfile."""
    users = [
        line.split(None, 1)[1].strip()
        for line in (ROOT / "images" / name / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    return users[-1]


def _script(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def _python_path() -> str:
    """The test venv's packages and the project's sources, for /usr/bin/python3 under any uid."""
    site = sysconfig.get_paths()["purelib"]
    return os.pathsep.join([str(ROOT / "operator"), str(ROOT / "spark"), str(ROOT / "trainer"), site])


def _readable_by_all(path: Path) -> None:
    """Folders that a pod's process must enter: mkdtemp makes them 0700."""
    path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def catalog(
    trainer_image: str = defaults.TRAINER_IMAGE, spark_image: str = defaults.SPARK_IMAGE
) -> dict[str, Image]:
    """The images of a cluster where `make images` pushed the project's images under these names."""
    base = Path(tempfile.mkdtemp(prefix="lth-images-"))
    _readable_by_all(base)
    java_home = os.environ.get("JAVA_HOME") or str(
        Path(os.path.realpath(shutil.which("java") or "/usr/bin/java")).parents[1]
    )
    common = {
        "PATH": "",
        "PYTHONPATH": _python_path(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "JAVA_HOME": java_home,
        "LANG": "C.UTF-8",
    }
    system_path = "/usr/local/bin:/usr/bin:/bin"

    trainer = base / "trainer"
    trainer.mkdir()
    _script(trainer, "python", f'exec {SYSTEM_PYTHON} "$@"')
    _script(trainer, "python3", f'exec {SYSTEM_PYTHON} "$@"')
    _script(trainer, "torchrun", f'exec {SYSTEM_PYTHON} -m torch.distributed.run "$@"')
    # `pip install ".[trainer,export]"` puts the `lth` console script (lth.cli:main) on PATH.
    _script(trainer, "lth", f'exec {SYSTEM_PYTHON} -m lth "$@"')

    spark = base / "spark"
    spark.mkdir()
    spark_home = Path(sysconfig.get_paths()["purelib"]) / "pyspark"
    main_in_image = SPARK_MAIN_IN_IMAGE.removeprefix("local://")
    main_here = ROOT / "spark" / "lth_spark" / "__main__.py"
    # /opt/entrypoint.sh `driver ...`: spark-submit in client mode; here local[2] in the pod.
    _script(
        spark,
        "spark-entrypoint",
        '[ "$1" = driver ] || exit 64\nshift\n'
        'while [ "$1" = --class ] || [ "$1" = --properties-file ]; do shift 2; done\n'
        f'main="$1"; shift\n[ "$main" = "local://{main_in_image}" ] && main="{main_here}"\n'
        f'exec "{spark_home}/bin/spark-submit" --master "local[2]" --conf spark.ui.enabled=false '
        '--conf spark.driver.host=127.0.0.1 "$main" "$@"',
    )
    alpine = base / "alpine"
    alpine.mkdir()
    # BusyBox nslookup asks the cluster DNS; the stand-in's DNS is the pod's /etc/hosts.
    _script(alpine, "nslookup", 'getent hosts "$1"')

    def image(folder: Path, user: str, gid: int, entrypoint: tuple[str, ...] = (), **env: str) -> Image:
        uid = int(user) if user.isdigit() else 0
        return Image(
            user=user,
            uid=uid,
            gid=gid,
            path=folder,
            entrypoint=entrypoint,
            env={**common, **env, "PATH": f"{folder}:{system_path}"},
        )

    trainer_user = dockerfile_user("trainer")
    spark_user = dockerfile_user("spark")
    return {
        trainer_image: image(trainer, trainer_user, int(trainer_user)),
        spark_image: image(
            spark,
            spark_user,
            int(spark_user),
            ("spark-entrypoint",),
            SPARK_HOME=str(spark_home),
            PYSPARK_PYTHON=SYSTEM_PYTHON,
            PYSPARK_DRIVER_PYTHON=SYSTEM_PYTHON,
        ),
        ALPINE: image(alpine, "", 0),
    }


def usable_by_other_users() -> str:
    """Why processes of another uid cannot run the project here; "" when they can."""
    if os.geteuid() != 0:
        return "the stand-in kubelet switches uid and mounts volumes: it needs root"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    for path in (ROOT, Path(sysconfig.get_paths()["purelib"])):
        for folder in [path, *path.parents]:
            if not folder.stat().st_mode & stat.S_IXOTH:
                return (
                    f"{folder} is not searchable by other users (mode {oct(folder.stat().st_mode & 0o777)})"
                )
    if sys.version_info[:2] != (3, 11):
        return "the venv's packages are built for another Python than /usr/bin/python3"
    return ""
