"""`graft serve` over HTTP against ONNX Runtime called directly on the same model file: p50
and p99 latency and throughput at batch 1 and 64, and their ratio, in one run.

The model is the default MLP (784-100-100-100-2, random weights) exported and given the
served model's head (class names, probabilities) by the export stage's own functions,
registered in a SQLite store in a temporary folder and served by `graft serve` in a
subprocess, as a user runs it. The client sends each batch as MLflow's ``{"inputs": rows}``
JSON, encoded once beforehand, over one kept-alive connection (TCP_NODELAY, as curl sets
it), one request at a time, and reads and decodes the answer; the direct figure is
``session.run`` on the same float32 rows. Both run ONNX Runtime on ``--threads`` threads.
Throughput is rows per second of that one sequential client.

    python bench/serving.py
    python bench/serving.py --runs 2000 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from export_latency import default_mlp

from graft.config import ExportConfig, load_config
from graft.export.formats import export_onnx
from graft.export.served_model import (
    INPUT_NAME,
    add_prediction_head,
    predict,
    record_missing_fill,
)
from graft.io import registry, tracking

MODEL_NAME = "graft-bench-serving"


def served_model_file(folder: Path, rows: np.ndarray) -> Path:
    """The default MLP as the export stage registers it: ONNX, with the prediction head."""
    example = torch.from_numpy(rows[:8])
    # the ONNX exporter reports its progress on stdout: keep the table alone there
    with contextlib.redirect_stdout(io.StringIO()):
        logits = export_onnx(
            default_mlp(False), example, folder / "model.onnx", ExportConfig().onnx_opset
        )
    served = add_prediction_head(logits, ["class_0", "class_1"], folder / "model.served.onnx")
    record_missing_fill(served, fills_missing=False)
    return served


def register(folder: Path, served: Path, rows: np.ndarray) -> list[str]:
    """Registers ``served`` as the champion of a SQLite store; the --set overrides naming it."""
    overrides = [
        f"work_dir={folder / 'work'}",
        f"tracking.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
        f"tracking.artifact_location={folder / 'artifacts'}",
        "tracking.experiment_name=bench-serving",
        f"export.model_name={MODEL_NAME}",
    ]
    config = load_config(preset="tiny", overrides=overrides)
    run_id = tracking.start_pipeline_run(config, "bench-serving")
    example = rows[:8]
    version = registry.register_model(config, run_id, served, example, predict(served, example))
    registry.set_alias(config, "champion", version)
    return overrides


def start_server(
    folder: Path, overrides: list[str], threads: int
) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [sys.executable, "-m", "graft.cli", "serve", "--preset", "tiny"]
    command += [f"--set={override}" for override in overrides]
    command += ["--port", str(port), "--threads", str(threads)]
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return process, port
        time.sleep(0.2)
    process.kill()
    sys.exit(f"graft serve did not start:\n{(folder / 'serve.log').read_text()}")


def timed(call: Callable[[], object], runs: int) -> np.ndarray:
    """Milliseconds of ``runs`` calls, after a warm-up of a tenth as many."""
    for _ in range(max(runs // 10, 5)):
        call()
    times = np.empty(runs)
    for index in range(runs):
        start = time.perf_counter_ns()
        call()
        times[index] = (time.perf_counter_ns() - start) / 1e6
    return times


def http_call(port: int, rows: np.ndarray, expected: list[str]) -> Callable[[], object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.connect()
    # as curl does: http.client sends the headers and the body in two writes, and with Nagle's
    # algorithm on the second waits for the server's delayed ACK (40 ms)
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = json.dumps({"inputs": rows.tolist()}).encode()
    headers = {"Content-Type": "application/json"}

    def call() -> object:
        connection.request("POST", "/invocations", body, headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200 or answer["predictions"]["label"] != expected:
            sys.exit(f"graft serve answered {response.status}: {str(answer)[:300]}")
        return answer

    return call


def direct_call(served: Path, rows: np.ndarray, threads: int) -> Callable[[], object]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(served), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {INPUT_NAME: rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="timed calls per figure")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads, both sides")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    rows = np.random.default_rng(0).random((max(args.batch_sizes), 1, 28, 28), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="graft-bench-serving-") as tmp:
        folder = Path(tmp)
        served = served_model_file(folder, rows)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            overrides = register(folder, served, rows)
        process, port = start_server(folder, overrides, args.threads)
        try:
            results = []
            for batch in args.batch_sizes:
                part = rows[:batch]
                expected = [str(label) for label in predict(served, part)["label"]]
                results.append(
                    (
                        batch,
                        timed(direct_call(served, part, args.threads), args.runs),
                        timed(http_call(port, part, expected), args.runs),
                    )
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    report(results, args)


def report(results: list[tuple[int, np.ndarray, np.ndarray]], args: argparse.Namespace) -> None:
    print(
        f"default MLP 784-100-100-100-2 with the served head, {args.runs} sequential calls per "
        f"figure, {args.threads} ONNX Runtime thread(s); graft serve on 127.0.0.1 over HTTP/1.1 "
        "keep-alive, JSON in and out"
    )
    header = f"{'batch':>5}  {'path':<20}{'p50 (ms)':>10}{'p99 (ms)':>10}{'rows/s':>12}"
    print(header)
    print("-" * len(header))
    for batch, direct, served in results:
        figures = []
        for name, times in (("onnxruntime", direct), ("graft serve", served)):
            p50, p99 = np.percentile(times, [50, 99])
            rate = batch * len(times) / (times.sum() / 1e3)
            figures.append((p50, p99, rate))
            print(f"{batch:>5}  {name:<20}{p50:>10.3f}{p99:>10.3f}{rate:>12,.0f}")
        ratios = [f"{serve / direct:.1f}x" for serve, direct in zip(*figures[::-1], strict=True)]
        rate_ratio = f"{figures[1][2] / figures[0][2]:.3f}x"
        print(
            f"{batch:>5}  {'ratio, serve/direct':<20}{ratios[0]:>10}{ratios[1]:>10}{rate_ratio:>12}"
        )


if __name__ == "__main__":
    main()
