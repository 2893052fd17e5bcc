"""Fuzzing tar indexing: any bytes, any damage to a real archive (headers rewritten with their
checksums made to hold, so the damage reaches every field) gives the members or one
BadArchive line, never a traceback, and never reads a member past the archive (issue 23)."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from lth_spark.tars import BLOCK, BadArchive, TarReader
from tests.spark.hostile import gnu_sparse_member, tar_of, tar_with


def _archives() -> list[bytes]:
    files = [("a.JPEG", b"x" * 700), ("d/" * 60 + "long.JPEG", b"y" * 5), ("é.JPEG", b"")]
    pax = io.BytesIO()
    with tarfile.open(fileobj=pax, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(data), {"comment": "z" * 300}
            tar.addfile(info, io.BytesIO(data))
    return [
        tar_of(files[:1] + files[2:]),
        tar_of(files, format=tarfile.GNU_FORMAT),
        pax.getvalue(),
        tar_with(files[:1], gnu_sparse_member("s.JPEG", 1 << 40)),
    ]


ARCHIVES = _archives()


def _read_all(data: bytes, length: int | None) -> None:
    """Index the archive and read every regular member, as a task does."""
    reader = TarReader(io.BytesIO(data), "fuzzed.tar", length)
    try:
        for member in reader:
            assert member.size >= 0 and member.offset % BLOCK == 0
            if length is not None:
                assert member.offset + member.size <= length
            if member.kind == "file":
                assert len(reader.read(member)) == member.size
    except BadArchive as error:
        assert "\n" not in str(error) and str(error).startswith("fuzzed.tar: ")


@given(st.binary(max_size=4 * BLOCK), st.booleans())
@settings(max_examples=300)
def test_any_bytes_are_members_or_one_line(data: bytes, known_length: bool) -> None:
    _read_all(data, len(data) if known_length else None)


def _fix_checksum(data: bytearray, header: int) -> None:
    block = data[header : header + BLOCK]
    if len(block) == BLOCK:
        block[148:156] = b" " * 8
        data[header + 148 : header + 156] = f"{sum(block):06o}".encode() + b"\0 "


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, bool]:
    data = bytearray(draw(st.sampled_from(ARCHIVES)))
    for _ in range(draw(st.integers(1, 4))):
        header = draw(st.integers(0, len(data) // BLOCK - 1)) * BLOCK
        at = header + draw(st.integers(0, BLOCK - 1))
        patch = draw(st.binary(min_size=1, max_size=12))
        data[at : at + len(patch)] = patch
        if draw(st.booleans()):
            _fix_checksum(data, header)
    cut = draw(st.none() | st.integers(0, len(data)))
    return bytes(data[:cut] if cut is not None else data), draw(st.booleans())


@given(damaged())
@settings(max_examples=500)
def test_any_damage_to_an_archive_is_members_or_one_line(case: tuple[bytes, bool]) -> None:
    data, known_length = case
    _read_all(data, len(data) if known_length else None)
