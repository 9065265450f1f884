"""JSON Lines: plain, .gz, .zst (and .bz2/.xz), streamed in 1 MiB chunks.

Lines are split from raw bytes and decoded one by one with errors="strict", so one bad
byte costs one line (`invalid_utf8`), never the file. Compressed streams are decoded
with incremental decompressor objects whose `eof` flag tells a complete stream from a
truncated one: `zstandard`'s stream reader, for one, returns a silent EOF on a cut-off
file, which would lose its tail without a trace.
"""

from __future__ import annotations

import bz2
import json
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from zaya_data.ledger import Ledger
from zaya_data.readers.fieldmap import Mapper, RecordError
from zaya_data.readers.rows import RowBuffer, record_limit
from zaya_data.specs import SourceSpec

try:  # orjson parses 2-3x faster than json and validates UTF-8 itself; optional.
    import orjson

    _fast_loads: Callable[[bytes], Any] | None = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None

STAGE = "read"
CHUNK = 1 << 20  # bytes read per step: large enough to amortise, small enough to bound memory
COMPRESSED_CHUNK = 1 << 18  # compressed input per step (output is a few times larger)


class TruncatedStream(Exception):
    """The compressed stream ended before its end marker, or is corrupt."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _zstd_decompressor() -> Any:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


# extension -> factory of an incremental decompressor with .decompress/.eof/.unused_data
_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    ".gz": lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS),
    ".zst": _zstd_decompressor,
    ".zstd": _zstd_decompressor,
    ".bz2": bz2.BZ2Decompressor,
    ".xz": lzma.LZMADecompressor,
}


def compression_of(path: str) -> str | None:
    lower = path.lower()
    for ext in _DECOMPRESSORS:
        if lower.endswith(ext):
            return ext
    return None


def _decompressed(fh: Any, ext: str) -> Iterator[bytes]:
    """Decompressed bytes of a (possibly multi-member / multi-frame) stream; raises
    TruncatedStream after the last complete output when the stream is cut or corrupt."""
    make = _DECOMPRESSORS[ext]
    errors: tuple[type[BaseException], ...] = (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError)
    try:
        import zstandard

        errors = errors + (zstandard.ZstdError,)
    except ImportError:  # pragma: no cover
        pass
    dec = make()
    fed = False
    while True:
        raw = fh.read(COMPRESSED_CHUNK)
        if not raw:
            break
        while raw:
            if dec.eof:
                # A new gzip member / zstd frame follows the finished one. Trailing zero
                # padding (tape-style writers) is not a member.
                if not raw.strip(b"\x00"):
                    raw = b""
                    break
                dec = make()
            fed = True
            try:
                out = dec.decompress(raw)
            except errors as e:
                raise TruncatedStream("corrupt_compressed_stream", f"{ext} stream is corrupt: {e}") from None
            if out:
                yield out
            raw = dec.unused_data if dec.eof else b""
    if fed and not dec.eof:
        raise TruncatedStream("truncated_compressed_stream", f"{ext} stream ended before its end marker")


class LongLine:
    """Stands in for a line longer than the reader's limit, whose bytes were dropped as
    they streamed by (so one huge line never sits in memory)."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size


def line_chunks(path: str, max_line: int | None = None) -> Iterator[list[bytes | LongLine]]:
    """Lists of complete lines (without b"\\n"), in order, never the whole file at once.
    The final line is yielded even without a trailing newline, unless the stream was
    truncated (then it is incomplete and belongs to the truncation rejection). A line of
    more than `max_line` bytes comes as a `LongLine`."""
    ext = compression_of(path)
    with open(path, "rb") as fh:
        if ext is None:
            chunks: Iterator[bytes] = iter(lambda: fh.read(CHUNK), b"")
        else:
            chunks = _decompressed(fh, ext)
        pending: list[bytes] = []  # pieces of a line longer than one chunk
        pending_size = 0
        dropped = 0  # bytes of the current line already dropped (it is over the limit)
        for chunk in chunks:
            if b"\n" not in chunk:
                if dropped:
                    dropped += len(chunk)
                    continue
                pending.append(chunk)
                pending_size += len(chunk)
                if max_line is not None and pending_size > max_line:
                    dropped, pending, pending_size = pending_size, [], 0
                continue
            lines: list[bytes | LongLine]
            if dropped:
                cut = chunk.index(b"\n")
                lines = [LongLine(dropped + cut), *chunk[cut + 1:].split(b"\n")]
                dropped = 0
            else:
                if pending:
                    pending.append(chunk)
                    chunk = b"".join(pending)
                    pending, pending_size = [], 0
                lines = list(chunk.split(b"\n"))
            last = lines.pop()
            assert isinstance(last, bytes)
            pending, pending_size = [last], len(last)
            if max_line is not None:
                lines = [LongLine(len(x)) if isinstance(x, bytes) and len(x) > max_line else x for x in lines]
            yield lines
        tail = b"".join(pending)
        if dropped or (max_line is not None and len(tail) > max_line):
            yield [LongLine(dropped + len(tail))]
        elif tail:
            yield [tail]


def _slow_parse(raw: bytes, encoding: str, first: bool) -> tuple[Any, str | None, str | None]:
    """Parse with the standard library: (record, reason, detail). Used for every line
    orjson refused (to name the real problem, and to accept what json accepts: NaN, huge
    ints, lone surrogate escapes) and for every line when orjson is absent."""
    try:
        text = raw.decode("utf-8-sig" if first and encoding == "utf-8" else encoding, errors="strict")
    except UnicodeDecodeError as e:
        reason = "invalid_utf8" if encoding.replace("-", "").lower() == "utf8" else "invalid_encoding"
        return None, reason, f"undecodable byte at offset {e.start}: {e.reason}"
    try:
        return json.loads(text), None, None
    except json.JSONDecodeError as e:
        return None, "invalid_json", f"{e.msg} at column {e.colno}"
    except ValueError as e:  # an integer literal beyond Python's digit limit
        return None, "invalid_json", str(e)
    except RecursionError:
        return None, "invalid_json", "nesting too deep"


def _has_surrogates(values: tuple[Any, ...]) -> str | None:
    """json.loads accepts lone surrogate escapes ("\\ud800"); Arrow cannot store them.
    Returns a description of the first offending value, or None."""
    for v in values:
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return "a mapped text field holds a lone surrogate (\\ud800-\\udfff escape)"
        elif isinstance(v, list):  # rollouts
            for r in v:
                for s in r.values():
                    if isinstance(s, str):
                        try:
                            s.encode("utf-8")
                        except UnicodeEncodeError:
                            return "a rollout holds a lone surrogate (\\ud800-\\udfff escape)"
    return None


def read_jsonl(spec: SourceSpec, path: str, file_index: int, ledger: Ledger, batch_size: int) -> Iterator[pa.Table]:
    mapper = Mapper(spec, with_meta=spec.options.get("meta", True))
    buf = RowBuffer(spec.kind, spec.name, spec.category, file_index, batch_size)
    encoding = str(spec.options.get("encoding", "utf-8")).lower()
    fast = _fast_loads if encoding in ("utf-8", "utf8") else None
    name = spec.name
    limit = record_limit(spec.options)
    lineno = -1
    try:
        for lines in line_chunks(path, limit):
            for raw in lines:
                lineno += 1
                if type(raw) is LongLine:
                    ledger.reject(STAGE, "record_too_large", name, file=path, location=f"line {lineno + 1}",
                                  detail=f"{raw.size:,} bytes, options.max_record_bytes is {limit:,}")
                    continue
                if not raw or raw.isspace():
                    continue  # blank lines are not records
                slow = True
                rec: Any = None
                if fast is not None:
                    try:
                        rec = fast(raw)
                        slow = False
                    except ValueError:
                        pass
                if slow:
                    rec, reason, detail = _slow_parse(raw, encoding, lineno == 0)
                    if reason is not None:
                        ledger.reject(STAGE, reason, name, file=path, location=f"line {lineno + 1}", detail=detail)
                        continue
                if type(rec) is not dict:
                    ledger.reject(
                        STAGE, "not_an_object", name, file=path, location=f"line {lineno + 1}",
                        detail=f"expected a JSON object, got {type(rec).__name__}",
                    )
                    continue
                try:
                    values = mapper(rec)
                except RecordError as e:
                    ledger.reject(STAGE, e.reason, name, file=path, location=f"line {lineno + 1}", detail=e.detail)
                    continue
                except Exception as e:  # a bug or an input nobody foresaw: name the record
                    raise RuntimeError(f"source {name!r}: {path}:line {lineno + 1}: cannot map the record: {e!r}") from e
                if slow:
                    bad = _has_surrogates(values)
                    if bad is not None:
                        ledger.reject(STAGE, "invalid_utf8", name, file=path, location=f"line {lineno + 1}", detail=bad)
                        continue
                if buf.add(values, lineno):
                    yield buf.flush()
    except TruncatedStream as e:
        ledger.reject(
            STAGE, e.reason, name, file=path, location=f"after line {lineno + 1}",
            detail=f"{e.detail}; {lineno + 1} complete lines were read, the rest of the file is lost",
        )
    if len(buf):
        yield buf.flush()
