"""Body codecs of the ClickHouse HTTP interface.

Two independent layers exist, exactly as in ClickHouse:

* HTTP content coding (``Content-Encoding`` on requests, ``Accept-Encoding`` /
  ``Content-Encoding`` on responses): standard gzip/deflate/zstd streams and the
  LZ4 *frame* format.
* ClickHouse native compressed blocks (``decompress=1`` for request bodies,
  ``compress=1`` for responses): a sequence of blocks, each
  ``checksum[16] | method[1] | compressed_size u32le | decompressed_size u32le | payload``
  where ``compressed_size`` counts the 9 header bytes and the checksum is
  CityHash128 v1.0.2 over the header and payload.

Everything here works incrementally on chunks so that large bodies are never
held whole in memory.
"""

from __future__ import annotations

import struct
import zlib
from typing import Callable, Iterable, Iterator

import lz4.block
import lz4.frame
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

from .errors import ClickHouseError

METHOD_NONE = 0x02
METHOD_LZ4 = 0x82
METHOD_ZSTD = 0x90

CHECKSUM_SIZE = 16
HEADER_SIZE = 9
# ClickHouse refuses blocks above 1 GiB (DBMS_MAX_COMPRESSED_SIZE); so do we, so
# that a corrupt size field cannot make us buffer gigabytes.
MAX_BLOCK_SIZE = 0x40000000

_HEADER = struct.Struct("<BII")
_U64_PAIR = struct.Struct("<QQ")
_MASK64 = (1 << 64) - 1


def checksum(data: bytes | memoryview) -> bytes:
    """The 16 checksum bytes as they appear on the wire.

    ClickHouse writes the 128-bit value as two little-endian u64 words, the
    high word first (the clickhouse crate: ``hash.rotate_right(64)`` as u128le).
    """
    value = CityHash128(bytes(data))
    return _U64_PAIR.pack(value >> 64, value & _MASK64)


def _hex_checksum(raw: bytes) -> str:
    high, low = _U64_PAIR.unpack(raw)
    return f"{high:016x}{low:016x}"


class NativeBlockDecoder:
    """Incremental decoder of native compressed blocks (``decompress=1``)."""

    def __init__(self, verify_checksum: bool = True) -> None:
        self._buf = bytearray()
        self._verify = verify_checksum
        self._zstd = zstandard.ZstdDecompressor()

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buf += chunk
        buf = self._buf
        pos = 0
        while len(buf) - pos >= CHECKSUM_SIZE + HEADER_SIZE:
            method, compressed_size, decompressed_size = _HEADER.unpack_from(buf, pos + CHECKSUM_SIZE)
            if compressed_size < HEADER_SIZE or compressed_size > MAX_BLOCK_SIZE or decompressed_size > MAX_BLOCK_SIZE:
                raise ClickHouseError(
                    271,
                    "CANNOT_DECOMPRESS",
                    f"Too large size_compressed_without_checksum: {compressed_size}. Most likely corrupted data.",
                )
            end = pos + CHECKSUM_SIZE + compressed_size
            if len(buf) < end:
                break
            view = memoryview(buf)
            framed = view[pos + CHECKSUM_SIZE : end]
            if self._verify:
                expected = bytes(view[pos : pos + CHECKSUM_SIZE])
                actual = checksum(framed)
                if actual != expected:
                    raise ClickHouseError(
                        40,
                        "CHECKSUM_DOESNT_MATCH",
                        "Checksum doesn't match: corrupted data. "
                        f"Reference: {_hex_checksum(expected)}. Actual: {_hex_checksum(actual)}. "
                        f"Size of compressed block: {compressed_size}",
                    )
            payload = bytes(framed[HEADER_SIZE:])
            framed.release()
            view.release()
            yield self._decompress(method, payload, decompressed_size)
            pos = end
        if pos:
            del buf[:pos]

    def _decompress(self, method: int, payload: bytes, size: int) -> bytes:
        try:
            if method == METHOD_LZ4:
                return lz4.block.decompress(payload, uncompressed_size=size)
            if method == METHOD_ZSTD:
                return self._zstd.decompress(payload, max_output_size=size)
            if method == METHOD_NONE:
                return payload
        except (lz4.block.LZ4BlockError, zstandard.ZstdError) as err:
            raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress block: {err}") from err
        raise ClickHouseError(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method: {method:#04x}")

    def finish(self) -> None:
        if self._buf:
            raise ClickHouseError(
                33,
                "CANNOT_READ_ALL_DATA",
                f"Cannot read all data: the body ends inside a compressed block ({len(self._buf)} bytes left over)",
            )


def decode_native_blocks(chunks: Iterable[bytes], verify_checksum: bool) -> Iterator[bytes]:
    decoder = NativeBlockDecoder(verify_checksum)
    for chunk in chunks:
        yield from decoder.feed(chunk)
    decoder.finish()


def encode_native_block(data: bytes, method: int = METHOD_LZ4) -> bytes:
    if method == METHOD_LZ4:
        payload = lz4.block.compress(data, store_size=False)
    elif method == METHOD_ZSTD:
        payload = zstandard.ZstdCompressor(level=1).compress(data)
    else:
        payload = data
    framed = _HEADER.pack(method, HEADER_SIZE + len(payload), len(data)) + payload
    return checksum(framed) + framed


# --- HTTP content coding -------------------------------------------------------

Decoder = Callable[[Iterable[bytes]], Iterator[bytes]]


def _zlib_decoder(wbits: int) -> Decoder:
    def decode(chunks: Iterable[bytes]) -> Iterator[bytes]:
        d = zlib.decompressobj(wbits)
        for chunk in chunks:
            out = d.decompress(chunk)
            if out:
                yield out
        tail = d.flush()
        if tail:
            yield tail

    return decode


def _zstd_decode(chunks: Iterable[bytes]) -> Iterator[bytes]:
    d = zstandard.ZstdDecompressor().decompressobj()
    for chunk in chunks:
        out = d.decompress(chunk)
        if out:
            yield out


def _lz4_decode(chunks: Iterable[bytes]) -> Iterator[bytes]:
    d = lz4.frame.LZ4FrameDecompressor()
    for chunk in chunks:
        while chunk:
            out = d.decompress(chunk)
            if out:
                yield out
            # A body may hold several concatenated frames.
            chunk = d.unused_data if d.eof else b""
            if d.eof:
                d = lz4.frame.LZ4FrameDecompressor()


REQUEST_DECODERS: dict[str, Decoder] = {
    "gzip": _zlib_decoder(16 + zlib.MAX_WBITS),
    "x-gzip": _zlib_decoder(16 + zlib.MAX_WBITS),
    "deflate": _zlib_decoder(zlib.MAX_WBITS),
    "zstd": _zstd_decode,
    "lz4": _lz4_decode,
}


def decode_content(encoding: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    decoder = REQUEST_DECODERS.get(encoding)
    if decoder is None:
        raise ClickHouseError(
            48, "NOT_IMPLEMENTED", f"Unknown HTTP Content-Encoding of the request body: {encoding}"
        )
    try:
        yield from decoder(chunks)
    except (zlib.error, zstandard.ZstdError, RuntimeError) as err:
        raise ClickHouseError(
            271, "CANNOT_DECOMPRESS", f"Cannot decode the request body ({encoding}): {err}"
        ) from err


class Encoder:
    """Incremental response encoder. ``flush`` returns everything buffered so a
    following write (e.g. an exception trailer) lands in its own unit."""

    name = "identity"

    def write(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


class ZlibEncoder(Encoder):
    def __init__(self, name: str, wbits: int, level: int) -> None:
        self.name = name
        self._c = zlib.compressobj(level, zlib.DEFLATED, wbits)

    def write(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class ZstdEncoder(Encoder):
    name = "zstd"

    def __init__(self, level: int) -> None:
        self._c = zstandard.ZstdCompressor(level=level).compressobj()

    def write(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._c.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class Lz4FrameEncoder(Encoder):
    """LZ4 frame with *independent* blocks: the clickhouse crate's decoder
    rejects linked blocks, and ClickHouse itself writes independent ones.
    ``auto_flush`` makes every write emit complete blocks, so nothing is held
    back and a later write (an exception trailer) starts a block of its own."""

    name = "lz4"

    def __init__(self) -> None:
        self._c = lz4.frame.LZ4FrameCompressor(
            block_size=lz4.frame.BLOCKSIZE_MAX64KB, block_linked=False, auto_flush=True
        )
        self._started = False

    def _begin(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._c.begin()

    def write(self, data: bytes) -> bytes:
        return self._begin() + self._c.compress(data)

    def flush(self) -> bytes:
        return self._begin()

    def finish(self) -> bytes:
        # python-lz4's flush() writes the end mark of the frame.
        return self._begin() + self._c.flush()


class NativeBlockEncoder(Encoder):
    """``compress=1``: the response body as native LZ4 blocks of up to 1 MiB."""

    name = "native"
    BLOCK = 1 << 20

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while len(self._buf) >= self.BLOCK:
            out += encode_native_block(bytes(self._buf[: self.BLOCK]))
            del self._buf[: self.BLOCK]
        return bytes(out)

    def flush(self) -> bytes:
        if not self._buf:
            return b""
        out = encode_native_block(bytes(self._buf))
        self._buf.clear()
        return out

    finish = flush


def response_encoder(accept_encoding: str, level: int) -> Encoder | None:
    """Pick an encoding the client accepts, in the client's order of preference."""
    for token in accept_encoding.split(","):
        name = token.split(";", 1)[0].strip().lower()
        if name in ("gzip", "x-gzip"):
            return ZlibEncoder(name, 16 + zlib.MAX_WBITS, level)
        if name == "deflate":
            return ZlibEncoder(name, zlib.MAX_WBITS, level)
        if name == "zstd":
            return ZstdEncoder(level)
        if name == "lz4":
            return Lz4FrameEncoder()
    return None
