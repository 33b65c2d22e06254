"""Fuzz the data intake `graft run` starts with (``check_source``) in this one process.

Run by ``test_fuzz.py`` under a 2 GiB address-space limit; by hand:
``python tests/fuzz/fuzz_data_intake.py --examples 2000 [--seed N]``. Every input must be
refused with one GraftError that names the path as the user gave it, or (a positive control)
accepted; anything else (another exception, a MemoryError, a slow input) fails the run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# before pyarrow loads: its jemalloc pool reserves a gigabyte of address space up front, which
# the fuzz test's RLIMIT_AS counts although no memory backs it
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from bad_data import (
    Case,
    crafted_archive,
    data_cases,
    file_stems,
    header_bomb,
    valid_table_bytes,
    zip_bomb,
)
from fuzz_run import fuzz_settings, parse_args, report
from hypothesis import example, given
from hypothesis import strategies as st

from graft.config import DataConfig
from graft.data.prepare import check_source
from graft.errors import GraftError

SLOW_S = 20.0  # one input taking this long is a failure: a bomb being decompressed, say

tally: Counter[str] = Counter()


def _write(folder: Path, number: int, stem: str, case: Case, relative: bool) -> str:
    """The file, and the source string the user gives: absolute or relative to the cwd."""
    name = f"{number}{stem}{case.suffix}"
    (folder / name).write_bytes(case.data)
    return name if relative else str(folder / name)


def _config(source: str, case: Case, roles: bool) -> DataConfig:
    """The data section: with ``roles``, a table's first columns become its time and groups
    (an .npz carries those as arrays 't' and 'groups', which the cases draw) and tabular NaNs
    are let through to be filled. A well-formed case keeps the plain config it was made for."""
    if not roles or case.expect == "accept":
        return DataConfig(source=source)
    return DataConfig(
        source=source, time_column="f0", group_column="f1", missing_values="fill_median"
    )


def check_one(folder: Path, case: Case, stem: str, relative: bool, roles: bool) -> None:
    tally["inputs tried"] += 1
    tally[case.kind] += 1
    source = _write(folder, tally["inputs tried"], stem, case, relative)
    started = time.monotonic()
    try:
        check_source(_config(source, case, roles))
    except GraftError as exc:
        message = str(exc)
        assert source in message, f"the error does not name {source!r}: {message}"
        assert "graft-data-" not in message, f"the error names Graft's copy: {message}"
        assert case.expect != "accept", f"a well-formed dataset was refused: {message}"
        tally["refused"] += 1
    else:
        assert case.expect != "refuse", f"{case} was accepted"
        tally["accepted"] += 1
    finally:
        (folder / Path(source).name).unlink()
    elapsed = time.monotonic() - started
    assert elapsed < SLOW_S, f"{case} took {elapsed:.1f} s"


def named_inputs() -> list[dict[str, object]]:
    """The inputs the issue names, tried every run however the draws fall."""
    inputs: list[tuple[Case, str]] = [
        (Case("npz zip bomb", ".npz", zip_bomb(), "refuse"), "#"),
        (crafted_archive("x.npy", header_bomb(10**9, 10**4), 0), "?"),
        (crafted_archive("x", b"", 8), "ü"),
        (Case("parquet valid", ".parquet", valid_table_bytes(), "accept"), "#1?a"),
    ]
    return [{"case": c, "stem": s, "relative": False, "roles": False} for c, s in inputs]


def main() -> int:
    args = parse_args(__doc__ or "")
    with tempfile.TemporaryDirectory(prefix="fuzz-intake-") as tmp:
        folder = Path(tmp)
        os.chdir(folder)  # relative sources resolve here

        @given(case=data_cases(), stem=file_stems, relative=st.booleans(), roles=st.booleans())
        def fuzz_intake(case: Case, stem: str, relative: bool, roles: bool) -> None:
            check_one(folder, case, stem, relative, roles)

        for named in named_inputs():
            fuzz_intake = example(**named)(fuzz_intake)
        return report("fuzz data intake", fuzz_settings(args)(fuzz_intake), tally, args)


if __name__ == "__main__":
    sys.exit(main())
