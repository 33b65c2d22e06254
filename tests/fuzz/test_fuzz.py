"""Hypothesis fuzzing of the data intake and of ``config_json`` (issue 18), each in a child
process under a 2 GiB address-space limit and a time limit, so that an input that would take
all the memory fails its test instead of the machine.

Every bad input must end in one GraftError naming the user's own path (a ConfigError for a
config), never a traceback or an out-of-memory death. The drivers run hypothesis in process
(a process per input would be far too slow) and print how many inputs they tried; the counts
appear in the session summary. ``tests/fuzz/fuzz_*.py --help`` runs them by hand, with more
inputs or another seed.
"""

from __future__ import annotations

import io
import os
import re
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bad_data import zip_bomb

HERE = Path(__file__).parent
MEMORY_LIMIT = 2 << 30  # RLIMIT_AS: what the child may map, Python and its libraries included
DRIVER_TIMEOUT_S = 240  # about ten times what either driver takes on 2 busy cores
DATA_EXAMPLES = 400
CONFIG_EXAMPLES = 800
SUMMARY = re.compile(r"^(fuzz [^:]+): (\d+) inputs tried, 0 failures", re.MULTILINE)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run_limited(args: list[str], tmp_path: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis"),  # not in the tree
        "COLUMNS": "200",
        "PYTHONWARNINGS": "ignore",  # numpy's cast warnings: noise among thousands of inputs
        # pyarrow's jemalloc reserves a gigabyte of address space up front, which RLIMIT_AS
        # counts although no memory backs it; the system allocator maps what it uses
        "ARROW_DEFAULT_MEMORY_POOL": "system",
    }
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
        preexec_fn=_limit_memory,
    )


@pytest.mark.parametrize(
    ("driver", "examples"),
    [("fuzz_data_intake.py", DATA_EXAMPLES), ("fuzz_config_json.py", CONFIG_EXAMPLES)],
)
def test_fuzzed_inputs_end_in_one_graft_error_or_are_accepted(
    driver: str, examples: int, tmp_path: Path, fuzz_summary: list[str]
) -> None:
    command = [sys.executable, str(HERE / driver), "--examples", str(examples)]
    result = _run_limited(command, tmp_path, DRIVER_TIMEOUT_S)
    output = result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1:] or [f"{driver}: no summary line"]
    fuzz_summary.append(last[0])
    print(output)
    assert result.returncode == 0, output
    found = SUMMARY.search(result.stdout)
    assert found, output
    assert int(found.group(2)) >= examples, output


def _truncated_npz(path: Path) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.ones((40, 3), np.float32), y=np.arange(40) % 2)
    path.write_bytes(buffer.getvalue()[:300])


def _channel_last_npz(path: Path) -> None:
    np.savez(path, x=np.zeros((6, 5, 5, 3), np.float32), y=np.arange(6) % 2)


def _label_2_to_40_parquet(path: Path) -> None:
    pd.DataFrame({"f0": np.arange(6.0), "label": [0, 1, 0, 1, 0, 2**40]}).to_parquet(path)


def _flipped_parquet_footer(path: Path) -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"f0": np.arange(6.0), "label": np.arange(6) % 2}).to_parquet(buffer)
    data = bytearray(buffer.getvalue())
    data[-6] ^= 0xFF  # the footer's length: the reader looks for metadata where there is none
    path.write_bytes(bytes(data))


CLI_CASES = {
    "zip bomb #1?.npz": lambda path: path.write_bytes(zip_bomb()),
    "cut off ü.npz": _truncated_npz,
    "#images?.npz": _channel_last_npz,
    "labels 数据 #2.parquet": _label_2_to_40_parquet,
    "flipped?.parquet": _flipped_parquet_footer,
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_the_cli_refuses_a_bad_file_in_one_error_line_naming_it(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    CLI_CASES[name](source)
    command = [sys.executable, "-m", "graft.cli", "run", "-p", "tiny"]
    result = _run_limited([*command, "--set", f"data.source={source}"], tmp_path, 120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert str(source) in errors[0], output


def test_the_zip_bomb_is_what_it_claims() -> None:
    """The fuzzers' bomb: about 3 MB on disk, 3 GiB declared and deflated in its directory."""
    data = zip_bomb()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        member = archive.getinfo("x.npy")
        with archive.open(member) as stream:
            assert stream.read(1 << 20)[128:] == bytes((1 << 20) - 128)
    assert len(data) < 16 << 20
    assert member.file_size > 3 << 30
    assert member.compress_type == zipfile.ZIP_DEFLATED
