"""Tar archives read whole or refused: every header checked, up to the end-of-archive marker.

Python's `tarfile` stops quietly at the first header it cannot read and at the end of a file
cut on a block boundary, so an interrupted download or a header damaged midway reads as a
smaller archive. This reader walks the headers itself (POSIX ustar, GNU and pax, the formats
`tarfile` and GNU tar write): a bad checksum, a member that runs past the end, a name that is
not UTF-8 or a stream that ends before the two zero blocks that close an archive is a
`BadArchive` naming the archive and the byte offset. It never expands a member: sparse
members, links and devices are reported as such, and a member's data is read only when the
caller asks, so a header that declares gigabytes costs nothing but a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
MAX_NAME_BYTES = 64 << 10
"""A GNU long name or link name, or a pax header, longer than this is not a name: refused."""
MAX_SPARSE_EXTENSIONS = 1 << 16
"""Extension blocks of one GNU sparse header at most (21 regions each)."""
SKIP_CHUNK = 1 << 20

Kind = Literal["file", "directory", "link", "sparse", "other"]

_KINDS: dict[bytes, Kind] = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",  # contiguous file: a regular file to every reader but one
    b"1": "link",
    b"2": "link",
    b"5": "directory",
    b"S": "sparse",
}
_EXTENDED = (b"L", b"K", b"x", b"g")
"""Headers that describe the next member (GNU long name and link, pax) or the archive (pax global)."""


class BadArchive(Exception):
    """The archive cannot be read whole: damaged, cut short, or not a tar; the message names it."""


@dataclass(frozen=True)
class Member:
    """One member as its headers describe it; `size` bytes of data at `offset` of the stream."""

    name: str
    kind: Kind
    header: int
    """Where its (first) header starts."""
    offset: int
    size: int
    """Bytes of data stored in the archive."""
    declared: int
    """Bytes it unpacks to: more than `size` for a sparse member."""

    @property
    def why_not_a_file(self) -> str:
        """What a reader of images says when it passes this member by."""
        if self.kind == "sparse":
            return f"a sparse member ({self.size} bytes stored, declares {self.declared}): not expanded"
        if self.kind == "link":
            return "a link, not a file: not followed"
        return "not a regular file (a device, FIFO or another special member)"


def _number(field: bytes, what: str, where: str, at: int) -> int:
    """A numeric header field: octal digits, or GNU's base-256 for large values."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise BadArchive(f"{where}: negative {what} in the header at byte {at}")
    digits = field.replace(b"\0", b" ").strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise BadArchive(f"{where}: bad {what} field in the header at byte {at}") from None


def _decoded(raw: bytes, where: str, at: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadArchive(f"{where}: the name {raw!r} in the header at byte {at} is not UTF-8") from None


def _pax_records(data: bytes, where: str, at: int) -> dict[str, str]:
    """A pax header's `LENGTH KEY=VALUE\\n` records."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        if data[position:].strip(b"\0") == b"":
            break
        space = data.find(b" ", position)
        try:
            length = int(data[position:space])
            record = data[space + 1 : position + length]
            if space < 0 or length <= 0 or not record.endswith(b"\n") or b"=" not in record:
                raise ValueError
        except ValueError:
            raise BadArchive(f"{where}: malformed pax header at byte {at}") from None
        key, _, value = record[:-1].partition(b"=")
        records[_decoded(key, where, at)] = _decoded(value, where, at)
        position += length
    return records


class TarReader:
    """The members of a tar stream in order; `read` gives the current member's data.

    `length` is the archive's size when known (a file, or a member of an outer tar): a member
    that runs past it is refused at its header. `limit` caps how far an archive of unknown
    length (a gzip stream) is read.
    """

    def __init__(self, stream: BinaryIO, where: str, length: int | None = None, limit: int | None = None):
        self._stream, self.where, self.length, self.limit = stream, where, length, limit
        self._seekable = length is not None and stream.seekable()
        """Skip data by seeking: every member was checked to end within `length`."""
        self._position = 0
        self._unread = 0
        """Data and padding of the current member not read yet."""
        self._current: Member | None = None

    def __iter__(self) -> Iterator[Member]:
        while True:
            self._skip_rest()
            member = self._next()
            if member is None:
                return
            self._current = member
            self._unread = -(-member.size // BLOCK) * BLOCK
            yield member

    def read(self, member: Member) -> bytes:
        """The data of `member`, the member just yielded (each member's data can be read once)."""
        if member is not self._current or self._unread < member.size:
            raise ValueError(f"{member.name}: not the current member of {self.where}")
        data = self._exactly(member.size, f"inside member {member.name}")
        self._unread -= member.size
        return data

    # ------------------------------------------------------------------ stream

    def _exactly(self, count: int, what: str) -> bytes:
        data = self._stream.read(count)
        if len(data) != count:
            end = self._position + len(data)
            raise BadArchive(f"{self.where}: cut short at byte {end} ({what}): the archive is incomplete")
        self._position += count
        return data

    def _skip_rest(self) -> None:
        left, self._unread = self._unread, 0
        if self._seekable and left:
            self._stream.seek(left, 1)
            self._position += left
            return
        while left > 0:
            self._exactly(min(left, SKIP_CHUNK), "inside member data")
            left -= min(left, SKIP_CHUNK)

    def _block(self) -> bytes | None:
        """The next block, or None at the end of the stream."""
        data = self._stream.read(BLOCK)
        if not data:
            return None
        if len(data) != BLOCK:
            raise BadArchive(
                f"{self.where}: cut short at byte {self._position + len(data)} (inside a header)"
            )
        self._position += BLOCK
        return data

    # ------------------------------------------------------------------ headers

    def _next(self) -> Member | None:
        """The next member, its extended headers applied; None at the end-of-archive marker."""
        long_name: str | None = None
        pax: dict[str, str] = {}
        first = self._position
        while True:
            at = self._position
            block = self._block()
            if block is None:
                raise BadArchive(
                    f"{self.where}: ends at byte {at} without the end-of-archive marker: "
                    "the archive is cut short (an interrupted download?)"
                )
            if block == ZERO_BLOCK:
                self._check_end(at)
                return None
            try:
                kind, size = self._check(block, at)
            except BadArchive as error:
                if at != 0:
                    raise
                detail = str(error).removeprefix(f"{self.where}: ")
                raise BadArchive(f"{self.where}: not a readable tar archive ({detail})") from None
            if kind in _EXTENDED:
                data = self._extended(kind, size, at)
                if kind == b"L":
                    long_name = _decoded(data.split(b"\0", 1)[0], self.where, at)
                elif kind == b"x":
                    pax.update(_pax_records(data, self.where, at))
                continue
            return self._member(block, kind, size, first, long_name, pax)

    def _check_end(self, at: int) -> None:
        """A zero block: the end of the archive if a second follows (or nothing: a lone zero block)."""
        second = self._block()
        if second is not None and second != ZERO_BLOCK:
            raise BadArchive(f"{self.where}: a zero block at byte {at} inside the archive (damaged)")

    def _check(self, block: bytes, at: int) -> tuple[bytes, int]:
        """The type flag and data size of a header whose checksum and magic hold."""
        stored = _number(block[148:156], "checksum", self.where, at)
        unsigned = sum(block[:148]) + 256 + sum(block[156:])
        signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)
        if stored not in (unsigned, signed):
            raise BadArchive(f"{self.where}: damaged header at byte {at} (checksum mismatch)")
        if block[257:263] not in (b"ustar\x00", b"ustar ", b"\0\0\0\0\0\0"):
            raise BadArchive(f"{self.where}: not a tar header at byte {at}")
        size = _number(block[124:136], "size", self.where, at)
        end = self._position + size
        if self.length is not None and end > self.length:
            raise BadArchive(
                f"{self.where}: the member at byte {at} declares {size} bytes, past the end of the "
                f"archive ({self.length} bytes): cut short or damaged"
            )
        if self.limit is not None and end > self.limit:
            raise BadArchive(f"{self.where}: holds more than the {self.limit} bytes it may (at byte {at})")
        return block[156:157], size

    def _extended(self, kind: bytes, size: int, at: int) -> bytes:
        if size > MAX_NAME_BYTES:
            raise BadArchive(f"{self.where}: an extended header of {size} bytes at byte {at}: not a name")
        data = self._exactly(size, "inside an extended header")
        self._exactly(-size % BLOCK, "inside an extended header")
        return data

    def _member(
        self, block: bytes, kind: bytes, size: int, first: int, long_name: str | None, pax: dict[str, str]
    ) -> Member:
        at = self._position - BLOCK
        name = _decoded(block[:100].split(b"\0", 1)[0], self.where, at)
        if block[257:263] == b"ustar\x00" and block[345] != 0:  # POSIX: a prefix of the path
            name = _decoded(block[345:500].split(b"\0", 1)[0], self.where, at) + "/" + name
        name = pax.get("GNU.sparse.name", pax.get("path", long_name or name))
        declared = size
        if "size" in pax:
            size = declared = self._pax_number(pax["size"], at)
            if self.length is not None and self._position + size > self.length:
                raise BadArchive(
                    f"{self.where}: the member at byte {at} declares {size} bytes, past the end of "
                    f"the archive ({self.length} bytes): cut short or damaged"
                )
        member_kind: Kind = _KINDS.get(kind, "other")
        if kind == b"S":
            declared = _number(block[483:495], "sparse size", self.where, at)
            self._skip_sparse_extensions(block, at)
        elif any(key.startswith("GNU.sparse.") for key in pax):
            member_kind = "sparse"
            real = pax.get("GNU.sparse.realsize", pax.get("GNU.sparse.size", "0"))
            declared = self._pax_number(real, at)
        return Member(name, member_kind, first, self._position, size, declared)

    def _pax_number(self, value: str, at: int) -> int:
        if not (value.isascii() and value.isdigit()):
            raise BadArchive(f"{self.where}: bad size {value!r} in the pax header before byte {at}")
        return int(value)

    def _skip_sparse_extensions(self, block: bytes, at: int) -> None:
        """GNU sparse headers may continue in extension blocks (not counted in the size)."""
        extended, count = block[482], 0
        while extended:
            count += 1
            if count > MAX_SPARSE_EXTENSIONS:
                raise BadArchive(f"{self.where}: a sparse header at byte {at} that never ends")
            extension = self._block()
            if extension is None:
                raise BadArchive(f"{self.where}: cut short inside the sparse header at byte {at}")
            extended = extension[504]


def index(stream: BinaryIO, where: str, length: int) -> list[Member]:
    """Every member of a whole archive, checked to its end-of-archive marker; data skipped."""
    return list(TarReader(stream, where, length))
