"""Opening input files the same way everywhere: ``-`` for stdin, gzip by its magic bytes, and text
as UTF-8 (with or without a byte-order mark, also at the start of any line: files joined with
``cat``) or UTF-16 with a byte-order mark.

Anything else is an error naming the byte offset where decoding failed (in the uncompressed
data). Readers of line-based formats use ``read_lines`` so that one undecodable line is one
error, not the end of the file."""

from __future__ import annotations

import codecs
import functools
import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from applied_aitk.console import get_logger, warn_once
from applied_aitk.errors import InputError

logger = get_logger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
BOM = codecs.BOM_UTF8
"""A UTF-8 byte-order mark: skipped at the start of a file and, in files joined with ``cat``, at the start of any line."""
BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def name_of(path: Path | str) -> str:
    """How messages name an input: the path as given, ``stdin`` for ``-``."""
    return "stdin" if str(path) == "-" else str(path)


def has_suffix(path: Path | str, suffixes: tuple[str, ...]) -> bool:
    """True when the name ends in one of ``suffixes``, also followed by ``.gz`` (``x.csv.gz``)."""
    name = Path(path).name.lower()
    return any(name.endswith(s) or name.endswith(s + ".gz") for s in suffixes)


def base_suffix(path: Path | str) -> str:
    """The suffix that says the format, past a ``.gz``: ``x.csv.gz`` -> ``.csv``."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        path = path.with_suffix("")
    return path.suffix.lower()


def open_binary(path: Path | str) -> BinaryIO:
    """The bytes of ``path`` (``-``: stdin), decompressed when they are gzip; InputError if unreadable."""
    try:
        raw = _stdin() if str(path) == "-" else open(path, "rb")
    except OSError as e:
        raise InputError(f"{name_of(path)}: cannot open ({e.strerror})") from None
    stream = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    if stream.peek(2)[:2] != GZIP_MAGIC:
        return stream
    if _gzip_head(stream) == GZIP_MAGIC:  # gzip of a .gz: its bytes read as text were "a NUL byte, UTF-16?"
        if str(path) != "-":
            stream.close()
        raise InputError(f"{name_of(path)}: gzip inside gzip (the file was compressed twice); decompress it once and give that file")
    return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]


def _gzip_head(stream: io.BufferedReader) -> bytes:
    """The first two bytes the gzip data at the head of ``stream`` decompresses to, without reading
    it; none when it is damaged (the reader of the file says so when it reads)."""
    try:
        return zlib.decompressobj(wbits=31).decompress(stream.peek(1 << 16), 2)
    except zlib.error:
        return b""


def open_text_bytes(path: Path | str) -> BinaryIO:
    """``open_binary`` of a text file, its line ends read as Python's universal newlines when its
    first line ends in a lone carriage return (classic Mac OS, Excel for Mac's "CSV (Macintosh)"):
    every ``\\r`` and ``\\r\\n`` then comes as ``\\n``. A file whose first line ends in ``\\n`` is read as
    it is (a carriage return inside a later line stays for its reader to refuse), and so is UTF-16,
    whose bytes cannot be translated one by one (a lone carriage return there stays refused)."""
    stream = open_binary(path)
    try:
        head = _peek(stream, 1 << 16)
    except (OSError, EOFError) as e:  # damaged gzip data (a failed peek leaves nothing more to read)
        if str(path) != "-":
            stream.close()
        raise InputError(f"{name_of(path)}: cannot read ({e})") from None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or not _lone_cr_first(head):
        return stream
    return io.BufferedReader(_UniversalNewlines(stream))


def _lone_cr_first(head: bytes) -> bool:
    """Whether the first line break in ``head`` is a carriage return not followed by a newline."""
    cr = head.find(b"\r")
    if cr < 0:
        return False
    newline = head.find(b"\n")
    return (newline < 0 or cr < newline) and head[cr + 1 : cr + 2] != b"\n"


class _UniversalNewlines(io.RawIOBase):
    """The bytes of a UTF-8 stream with ``\\r\\n`` and ``\\r`` as ``\\n`` (a ``\\r`` at the end of a block
    is held until the next byte is known)."""

    def __init__(self, stream: BinaryIO):
        self._stream, self._out, self._held, self._ended = stream, b"", b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out and not self._ended:
            chunk = self._stream.read(1 << 16)
            data, self._ended = self._held + chunk, not chunk
            self._held = b"\r" if chunk.endswith(b"\r") else b""
            if self._held:
                data = data[:-1]
            self._out = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        size = min(len(buffer), len(self._out))
        buffer[:size] = self._out[:size]
        self._out = self._out[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def _stdin() -> BinaryIO:
    """stdin's bytes through a reader of our own on its descriptor (the same one for every call):
    a read blocked in a reader thread (``batch_threads.prefetched``) then holds no lock of ``sys.stdin``,
    which the interpreter takes at exit; waiting on ``sys.stdin.buffer`` a Ctrl-C ended in
    "Fatal Python error: could not acquire lock for <stdin>". ``sys.stdin.buffer`` when stdin
    has no descriptor (replaced in-process)."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdin.buffer
    if _descriptor_reader(fd).closed:  # a reader that read it to the end closed it
        _descriptor_reader.cache_clear()
    return _descriptor_reader(fd)


@functools.cache
def _descriptor_reader(fd: int) -> BinaryIO:
    return io.BufferedReader(io.FileIO(fd, "rb", closefd=False))


def text_encoding(stream: BinaryIO) -> tuple[str, int]:
    """Consume a byte-order mark if there is one: (the encoding to decode the rest with, BOM bytes)."""
    head = _peek(stream, 3)
    for bom, encoding in BOMS:
        if head.startswith(bom):
            stream.read(len(bom))
            return encoding, len(bom)
    return "utf-8", 0


NUL = b"\x00"
LONE_CR = "lines end in a lone carriage return (classic Mac OS line ends); save the file with \\n or \\r\\n line ends"
"""Why a table whose first line still holds a carriage return before its end cannot be read by line
(UTF-16: ``open_text_bytes`` reads UTF-8 ones as universal newlines)."""


@dataclass
class Line:
    """One line of a text input: ``number`` counts from 1; ``text`` is None when ``error`` says why."""

    number: int
    text: str | None
    error: str | None = None

    def message(self, name: str) -> str:
        """The line's error as every reader of lines words it: ``FILE:LINE: reason``."""
        return f"{name}:{self.number}: {self.error}"


def read_lines(path: Path | str) -> Iterator[Line]:
    """The non-blank lines of a text file (newline stripped, a byte-order mark at a line's start
    too: files joined with ``cat``), decoded one by one.

    A line that is not valid text is a Line with ``error`` ("not valid UTF-8 (byte B of the line)",
    worded for a message by ``Line.message``: the words of the table readers)
    and the lines after it are still read. An unreadable file raises InputError."""
    with open_text_bytes(path) as stream:
        try:
            encoding, offset = text_encoding(stream)
        except (OSError, EOFError) as e:
            raise InputError(f"{name_of(path)}: cannot read ({e})") from None
        lines = _utf8_lines(stream, offset) if encoding == "utf-8" else _utf16_lines(stream, encoding, offset)
        empty = True
        for line in _named_errors(lines, path):
            if line.error is not None or line.text.strip():
                empty = False
                yield line
        if empty:
            warn_once(f"{name_of(path)}: empty, no records", logger.name)  # once, though a file may be read to count it first


def _named_errors(lines: Iterator[Line], path: Path | str) -> Iterator[Line]:
    """``lines``, an InputError raised while reading them (a truncated gzip) naming the file."""
    try:
        yield from lines
    except InputError as e:
        raise InputError(f"{name_of(path)}: {e}") from None


def _utf8_lines(stream: BinaryIO, offset: int) -> Iterator[Line]:
    number = 0
    for number, raw in enumerate(_raw_lines(stream), 1):
        yield _decode_line(raw, number, offset)
        offset += len(raw)


def _raw_lines(stream: BinaryIO) -> Iterator[bytes]:
    try:
        yield from stream
    except (OSError, EOFError) as e:  # a truncated or corrupt gzip stream
        raise InputError(f"cannot read ({e})") from None


def _decode_line(raw: bytes, number: int, offset: int) -> Line:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Line(number, None, f"not valid UTF-8 (byte {e.start} of the line)")
    if "\x00" in text:
        return Line(number, None, f"NUL byte (byte {raw.index(NUL)} of the line; UTF-16 needs a byte-order mark)")
    return Line(number, text.rstrip("\r\n").removeprefix("\ufeff"))


def _utf16_lines(stream: BinaryIO, encoding: str, offset: int) -> Iterator[Line]:
    decoder = codecs.getincrementaldecoder(encoding)()
    pending, number = "", 0
    while True:
        chunk = stream.read(1 << 16)
        try:
            pending += decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            yield Line(number + 1, None, f"not valid {encoding.upper()} at byte {offset + len(pending.encode(encoding)) + e.start}")
            return
        *complete, pending = pending.split("\n")
        for text in complete:
            number += 1
            yield Line(number, text.rstrip("\r").removeprefix("\ufeff"))
            offset += len(text.encode(encoding, "surrogatepass")) + 2
        if not chunk:
            if pending:
                yield Line(number + 1, pending.rstrip("\r").removeprefix("\ufeff"))
            return


def _peek(stream: BinaryIO, size: int) -> bytes:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return peek(size)[:size]
    return b""


class _TextReader(io.TextIOBase):
    """A read-only text stream over decoded lines; a bad line raises InputError naming file and byte."""

    block_size = 1 << 16
    """Bytes read at a time."""

    def __init__(self, path: Path | str):
        self._name = name_of(path)
        self._stream = open_text_bytes(path)
        try:  # a corrupt or truncated gzip header fails at the first peek
            self._encoding, self._offset = text_encoding(self._stream)
        except (OSError, EOFError) as e:
            self.close()
            raise InputError(f"{self._name}: cannot read ({e})") from None
        self._decoder = codecs.getincrementaldecoder(self._encoding)()
        self._buffer = ""
        self._line_start = True

    def readable(self) -> bool:
        return True

    def _next(self) -> str | None:
        """The text of the next block of bytes; None past the end."""
        try:
            chunk = self._stream.read(self.block_size)
        except (OSError, EOFError) as e:
            raise InputError(f"{self._name}: cannot read ({e})") from None
        held = len(self._decoder.getstate()[0])  # bytes of a character the last chunk cut in two
        try:
            text = self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise InputError(f"{self._name}: not valid {self._encoding.upper()} at byte {self._offset - held + e.start}") from None
        if self._encoding == "utf-8" and "\x00" in text:
            at = self._offset - held + chunk.index(b"\x00")
            raise InputError(f"{self._name}: NUL byte at byte {at} (UTF-16 needs a byte-order mark)")
        self._offset += len(chunk)
        return self._without_boms(text) if chunk else None

    def _without_boms(self, text: str) -> str:
        """``text`` without a byte-order mark at the start of a line (files joined with ``cat``)."""
        if "\ufeff" in text:
            text = text.replace("\n\ufeff", "\n")
            if self._line_start:
                text = text.removeprefix("\ufeff")
        if text:
            self._line_start = text.endswith("\n")
        return text

    def _fill(self) -> bool:
        text = self._next()
        self._buffer += text or ""
        return text is not None

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:  # the blocks joined once: adding each to the buffer copied it each time (quadratic)
            parts = [self._buffer]
            while (text := self._next()) is not None:
                parts.append(text)
            out, self._buffer = "".join(parts), ""
            return out
        while len(self._buffer) < size and self._fill():
            pass
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def readline(self, size: int | None = -1) -> str:
        while "\n" not in self._buffer and self._fill():
            pass
        end = self._buffer.find("\n") + 1 or len(self._buffer)
        if size is not None and 0 <= size < end:
            end = size
        out, self._buffer = self._buffer[:end], self._buffer[end:]
        return out

    def close(self) -> None:
        if self._name != "stdin":
            self._stream.close()
        super().close()


def open_text(path: Path | str) -> io.TextIOBase:
    """``path`` as a text stream: gzip undone, a UTF-8 or UTF-16 byte-order mark honoured, else UTF-8;
    a byte-order mark at the start of a later line (files joined with ``cat``) dropped.

    Newlines are kept as they are (like ``newline=""``, as the csv module wants), but lines that end
    in a lone carriage return come with ``\\n`` (``open_text_bytes``). Reading raises
    InputError naming the file and the byte offset where the text stops being valid."""
    return _TextReader(path)
