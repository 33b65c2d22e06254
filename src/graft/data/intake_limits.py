"""What the intake refuses before it reads a byte of data: archives numpy did not write, and
files whose declared size would not fit in the memory this process has left.

``numpy.load`` trusts an .npz: it allocates the whole array its .npy header declares before
reading the member, and decompresses a member whatever its size. A 3 MB zip bomb then costs
gigabytes, and a 200-byte header declaring 10**15 rows fails in numpy's allocator instead of
with an error naming the file. So the zip directory and each header are read first, and the
sizes they declare are checked against each other and against the memory left.
"""

from __future__ import annotations

import math
import resource
import zipfile
import zlib
from pathlib import Path

import numpy as np

from graft.errors import DatasetError

# the .npz members the intake reads (numpy stores array 'x' as member 'x.npy')
NPZ_ARRAYS = ("x", "y", "t", "groups")
# numpy writes these two; another method would only add decompressors' own exception types
NPZ_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
# the intake holds the raw arrays plus a float32 copy of the features and the checks'
# temporaries of the same size: this many float32 copies of x on top of the raw bytes
FEATURE_COPIES = 3
GIB = 1 << 30
# deflate cannot shrink data more than about 1030:1, and only constant bytes come near that: a
# member that large and that compressed is padding or a zip bomb, whatever memory is free
BOMB_RATIO = 500
BOMB_MIN_BYTES = 64 << 20


def _proc_kib(path: str, field: str) -> int | None:
    """A ``<field>: <n> kB`` line of a /proc file, in bytes (None off Linux)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    """Bytes left under the container's memory limit (a Kubernetes pod's), if it has one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    return None if limit == "max" else int(limit) - int(used)


def memory_headroom() -> int | None:
    """Bytes this process can still allocate: the least of the RAM available, the cgroup's
    headroom and, under an address-space limit (ulimit -v), that limit less what is mapped.
    None when none of them can be read."""
    limits = [_proc_kib("/proc/meminfo", "MemAvailable"), _cgroup_headroom()]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    mapped = _proc_kib("/proc/self/status", "VmSize")
    if soft != resource.RLIM_INFINITY and mapped is not None:
        limits.append(soft - mapped)
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def check_fits_in_memory(shown: str, raw_bytes: int, feature_values: int) -> None:
    """Refuse a source whose arrays, once read, would not fit in the memory left."""
    needed = raw_bytes + FEATURE_COPIES * 4 * feature_values
    headroom = memory_headroom()
    if headroom is not None and needed > headroom:
        raise DatasetError(
            f"{shown} would need {needed / GIB:.1f} GiB of memory to read and check, more "
            f"than the {max(headroom, 0) / GIB:.1f} GiB this process has left; give the "
            "stage more memory or subsample the file"
        )


def _npy_header(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a member's .npy header declares, read without its data."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:  # 3.0 only adds utf-8 field names: a table of records, not features or labels
            raise ValueError(f".npy format version {version} is not supported")
    return shape, dtype


def _check_member(archive: zipfile.ZipFile, name: str, shown: str) -> tuple[int, int]:
    """(declared bytes, element count) of array ``name``, once it is known to be sound."""
    info = archive.getinfo(f"{name}.npy")
    where = f"{shown}: member '{info.filename}'"
    if info.flag_bits & 0x1:
        raise DatasetError(f"{where} is encrypted; store the arrays with numpy.savez")
    if info.compress_type not in NPZ_COMPRESSION:
        raise DatasetError(
            f"{where} uses zip compression method {info.compress_type}; numpy.savez and "
            "numpy.savez_compressed write stored or deflated members only"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > BOMB_MIN_BYTES and ratio > BOMB_RATIO:
        raise DatasetError(
            f"{where} would inflate {ratio:.0f}-fold to {info.file_size / GIB:.1f} GiB, as a "
            "zip bomb does; if these are real data, save them with numpy.savez (uncompressed)"
        )
    shape, dtype = _npy_header(archive, info)
    if dtype.hasobject:
        raise DatasetError(
            f"{where} holds Python objects (dtype {dtype}), which Graft does not unpickle; "
            "store numbers"
        )
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size:
        raise DatasetError(
            f"{where} declares shape {shape} of {dtype} ({declared} bytes) but holds "
            f"{info.file_size} bytes; the archive is truncated or was not written by numpy"
        )
    return info.file_size, math.prod(shape)


def check_npz(path: Path, shown: str) -> None:
    """The zip directory and .npy headers of the arrays the intake reads, before numpy does.

    ``path`` is the local copy; errors name ``shown``, the source the user gave."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bare = sorted(name for name in NPZ_ARRAYS if name in names)
            if bare:  # numpy.load would hand these back as raw bytes, not arrays
                raise DatasetError(
                    f"{shown}: members {bare} are not .npy arrays; write the file with numpy.savez"
                )
            sizes = {
                name: _check_member(archive, name, shown)
                for name in NPZ_ARRAYS
                if f"{name}.npy" in names
            }
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"{shown} is not a readable .npz file: {exc}") from None
    raw = sum(size for size, _ in sizes.values())
    check_fits_in_memory(shown, raw, sizes.get("x", (0, 0))[1])
