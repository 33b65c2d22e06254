"""Hypothesis strategies for the files a user (or anyone who can write to the bucket) may hand
Graft's data intake: arrays of every dtype and 0 to 5 dimensions, labels that are not class
ids, tables without features, truncated and bit-flipped archives, and a zip bomb.

A case is the file's bytes, its suffix, and what the intake must do with it: accept it (a
well-formed dataset: the positive controls keep the fuzzer from passing by refusing everything),
refuse it (a file crafted to be bad), or either (random arrays, damaged files: a flipped bit in
a float is still a float).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from functools import cache

import numpy as np
import pandas as pd
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

MAX_SIDE = 5
# every numeric dtype, and the ones that are not real numbers
NUMERIC = [np.dtype(c) for c in "bhilqBHILQefdg"]
OTHER = [np.dtype(c) for c in ("?", "F", "D", "M8[ns]", "M8[D]", "m8[s]", "U3", "S3")]
BOMB_BYTES = 3 << 30  # what the zip bomb's member decompresses to: above the 2 GiB limit


class Case:
    def __init__(self, kind: str, suffix: str, data: bytes, expect: str = "either") -> None:
        self.kind = kind  # which generator made it, for the driver's tally
        self.suffix = suffix  # ".npz" or ".parquet"
        self.data = data
        self.expect = expect  # "accept", "refuse" or "either"

    def __repr__(self) -> str:  # hypothesis prints a failing case: its bytes are noise there
        return f"Case({self.kind!r}, {self.suffix!r}, {len(self.data)} bytes, {self.expect})"


def _npz_bytes(arrays: dict[str, object], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _object_array(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    values = st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats())
    flat = draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(shape)


@st.composite
def any_array(draw: st.DrawFn, rows: int | None = None, max_dims: int = 5) -> np.ndarray:
    """An array of any dtype (object included) and 0 to ``max_dims`` dimensions."""
    shape = draw(
        st.one_of(
            hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=MAX_SIDE),
            # images, channel-first (accepted) or channel-last (refused)
            st.tuples(st.integers(1, 4), st.sampled_from([1, 3, 4]), st.just(5), st.just(5)),
            st.tuples(st.integers(1, 4), st.just(5), st.just(5), st.sampled_from([1, 3, 4])),
        )
    )
    if rows is not None and shape and draw(st.booleans()):
        shape = (rows, *shape[1:])  # rows that match the labels' reach the deeper checks
    dtype = draw(st.sampled_from([*NUMERIC, *OTHER, np.dtype(object)]))
    if dtype.hasobject:
        return _object_array(draw, shape)
    return draw(hnp.arrays(dtype, shape))


@st.composite
def labels(draw: st.DrawFn, rows: int) -> np.ndarray:
    """Labels that are class ids, and ones that are not: 2**40, NaN, strings, huge floats."""
    good = np.arange(rows) % 2
    special = draw(st.sampled_from(["good", "2**40", "nan", "str", "1e300", "u64", "neg"]))
    out: np.ndarray = {
        "good": good,
        "2**40": np.where(good == 1, 2**40, 0),
        "nan": np.where(good == 1, np.nan, 0.0),
        "str": good.astype(str),
        "1e300": np.where(good == 1, 1e300, 0.0),
        "u64": np.where(good == 1, np.iinfo(np.uint64).max, 0).astype(np.uint64),
        "neg": good - 1,
    }[special]
    if draw(st.booleans()):
        return out
    return draw(any_array(rows=rows, max_dims=2))


@st.composite
def npz_arrays(draw: st.DrawFn) -> Case:
    """An archive of random arrays under the names the intake reads (and a few it does not)."""
    rows = draw(st.integers(0, MAX_SIDE))
    arrays: dict[str, object] = {}
    if draw(st.integers(0, 9)):
        arrays["x"] = draw(any_array(rows=rows))
    if draw(st.integers(0, 9)):
        arrays["y"] = draw(labels(rows))
    for name in draw(st.lists(st.sampled_from(["t", "groups", "extra"]), unique=True)):
        arrays[name] = draw(any_array(rows=rows, max_dims=2))
    return Case("npz arrays", ".npz", _npz_bytes(arrays, draw(st.booleans())))


@st.composite
def valid_npz(draw: st.DrawFn) -> Case:
    rows = draw(st.integers(2, 12))
    image = draw(st.booleans())
    shape = (
        (rows, draw(st.sampled_from([1, 3])), 4, 4) if image else (rows, draw(st.integers(1, 4)))
    )
    dtype = draw(st.sampled_from([np.float32, np.float64, np.uint8, np.int16]))
    x = np.random.default_rng(rows).normal(size=shape).astype(dtype)
    y = (np.arange(rows) % 2).astype(draw(st.sampled_from([np.int64, np.uint8, np.float32])))
    data = _npz_bytes({"x": x, "y": y}, draw(st.booleans()))
    return Case("npz valid", ".npz", data, "accept")


@st.composite
def feature_column(draw: st.DrawFn, rows: int) -> pd.Series:
    kind = draw(st.sampled_from(["int8", "uint64", "float16", "float64", "Int64", "bool", "str"]))
    if kind == "str":
        return pd.Series(draw(st.lists(st.text(max_size=3), min_size=rows, max_size=rows)))
    if kind == "Int64":  # pandas' nullable integers: missing values become NaN
        return pd.Series([None if i % 2 else i for i in range(rows)], dtype="Int64")
    return pd.Series(draw(hnp.arrays(np.dtype(kind), (rows,))))


@st.composite
def parquet_table(draw: st.DrawFn) -> Case:
    """A table with 0 to 5 rows, 0 to 3 feature columns of any type, and odd labels."""
    rows = draw(st.integers(0, MAX_SIDE))
    columns = {f"f{i}": draw(feature_column(rows)) for i in range(draw(st.integers(0, 3)))}
    if draw(st.integers(0, 9)):
        y = draw(labels(rows))
        if y.ndim == 1 and len(y) == rows and y.dtype != object:
            columns["label"] = pd.Series(y)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(rows))
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer)
    except Exception:  # a column Parquet cannot store (float128, some objects): write none
        buffer = io.BytesIO()
        pd.DataFrame({"label": np.arange(rows) % 2}).to_parquet(buffer)
    return Case("parquet table", ".parquet", buffer.getvalue())


def valid_table_bytes(rows: int = 6, columns: int = 2) -> bytes:
    """A well-formed Parquet table: random features and labels 0, 1, 0, ..."""
    features = np.random.default_rng(rows).normal(size=(rows, columns))
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(columns)])
    frame["label"] = np.arange(rows) % 2
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


@st.composite
def valid_parquet(draw: st.DrawFn) -> Case:
    data = valid_table_bytes(draw(st.integers(2, 12)), draw(st.integers(1, 3)))
    return Case("parquet valid", ".parquet", data, "accept")


@st.composite
def damaged(draw: st.DrawFn, source: st.SearchStrategy[Case]) -> Case:
    """A case truncated at any byte or with a few bits flipped anywhere."""
    case = draw(source)
    data = bytearray(case.data)
    if draw(st.booleans()):
        cut = draw(st.integers(0, max(len(data) - 1, 0)))
        return Case(f"{case.suffix[1:]} truncated", case.suffix, bytes(data[:cut]))
    for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
        data[position] ^= 1 << draw(st.integers(0, 7))
    return Case(f"{case.suffix[1:]} bit-flipped", case.suffix, bytes(data))


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape})
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def crafted_archive(x_member: str, x_bytes: bytes, compression: int) -> Case:
    """An archive with a sound 'y.npy' and the given member in place of x's array."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr(x_member, x_bytes)
        archive.writestr("y.npy", _npz_member(np.arange(4) % 2))
    kind = "header bomb" if x_member == "x.npy" else "raw member"
    return Case(f"npz {kind}", ".npz", buffer.getvalue(), "refuse")


def header_bomb(rows: int, columns: int) -> bytes:
    """A .npy header declaring rows x columns float32 over 64 bytes: numpy would allocate it."""
    return _npy_header((rows, columns)) + bytes(64)


@st.composite
def crafted_npz(draw: st.DrawFn) -> Case:
    """Archives no numpy writes: a header declaring far more than the member holds, a member
    'x' that is not a .npy, a bare .npy or random bytes named .npz, and the zip bomb."""
    kind = draw(st.sampled_from(["header bomb", "raw member", "bare npy", "random bytes", "bomb"]))
    if kind == "bomb":
        return Case("npz zip bomb", ".npz", zip_bomb(), "refuse")
    if kind == "random bytes":
        return Case("npz random bytes", ".npz", draw(st.binary(max_size=200)), "refuse")
    if kind == "bare npy":
        buffer = io.BytesIO()
        np.save(buffer, draw(any_array()), allow_pickle=True)
        return Case("npz bare npy", ".npz", buffer.getvalue(), "refuse")
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    if kind == "raw member":
        return crafted_archive("x", draw(st.binary(max_size=64)), compression)
    shape = (draw(st.integers(10**6, 10**15)), draw(st.integers(1, 10**4)))
    return crafted_archive("x.npy", header_bomb(*shape), compression)


def _npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@cache
def zip_bomb() -> bytes:
    """An .npz of about 3 MB whose 'x.npy' honestly declares and holds 3 GiB of zeros, next to
    a well-formed 'y.npy', so that nothing but the size stops a loader before it inflates x.

    Written by hand: deflating 3 GiB through zipfile would take the test a minute. After a full
    flush a deflate stream restarts, so the compressed form of each 1 MiB of zeros is the same
    bytes, repeated."""
    header = _npy_header((BOMB_BYTES // 4096, 1024))
    chunk = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    stream = head + body * (BOMB_BYTES // len(chunk)) + deflate.flush()
    crc = zlib.crc32(header)
    for _ in range(BOMB_BYTES // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    y = _npz_member((np.arange(BOMB_BYTES // 4096) % 2).astype(np.uint8))
    return _zip(
        [
            (b"x.npy", 8, stream, crc, len(header) + BOMB_BYTES),
            (b"y.npy", 0, y, zlib.crc32(y), len(y)),
        ]
    )


def _zip(members: list[tuple[bytes, int, bytes, int, int]]) -> bytes:
    """A zip of (name, method, stored bytes, crc, size) members; sizes under 4 GiB, so no
    zip64 records are needed."""
    local, central = b"", b""
    for name, method, stream, crc, size in members:
        sizes = struct.pack("<III", crc, len(stream), size)
        offset = len(local)
        local += struct.pack("<IHHHHH", 0x04034B50, 20, 0, method, 0, 0) + sizes
        local += struct.pack("<HH", len(name), 0) + name + stream
        central += struct.pack("<IHHHHHH", 0x02014B50, 20, 20, 0, method, 0, 0) + sizes
        central += struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, offset) + name
    count = len(members)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(local), 0)
    return local + central + end


def data_cases() -> st.SearchStrategy[Case]:
    """Every kind of input, the damaged ones drawn from well-formed and odd files alike."""
    npz = st.one_of(valid_npz(), npz_arrays())
    table = st.one_of(valid_parquet(), parquet_table())
    return st.one_of(
        valid_npz(),
        npz_arrays(),
        crafted_npz(),
        damaged(npz),
        valid_parquet(),
        parquet_table(),
        damaged(table),
    )


# '#' and '?' cut a path that goes through a URL parser; unicode, spaces and quotes as users
# name their files (no '/', NUL or control characters: those are not one file name)
name_characters = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\", max_codepoint=0x1FFFF
)
file_stems = st.tuples(
    st.sampled_from(["", "#", "?", "a#b?c", "data #1 ", "ünï", "数据", "x'y\"z"]),
    st.text(name_characters, max_size=12),
).map("".join)
