"""Inference latency of the export formats: PyTorch eager, TorchScript, ONNX Runtime (fp32
and fp16 weights) and int8 dynamic quantization, at batch 1 and 64.

The model is the default MLP shape (784-100-100-100-2, ReLU) with random weights: latency does
not depend on what the weights learned. Each figure is the median of ``--runs`` timed calls
after a warm-up, on ``--threads`` CPU threads (PyTorch and ONNX Runtime alike). The ONNX
files are built with the same functions the export stage uses.

    python bench/export_latency.py
    python bench/export_latency.py --runs 500 --threads 2 --batch-norm
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from graft.config import ExportConfig, ModelConfig
from graft.export.folding import fold_batch_norm
from graft.export.formats import export_onnx, export_torchscript
from graft.export.variants import (
    export_fp16_onnx,
    latency_batches,
    onnx_call,
    onnx_session,
    quantize_int8,
    torch_call,
)
from graft.nn.models import GraftNet, ModelSpec, build_model


def default_mlp(batch_norm: bool) -> GraftNet:
    torch.manual_seed(0)
    spec = ModelSpec(
        model=ModelConfig(
            hidden_sizes=[100, 100, 100], batch_norm={"enabled": batch_norm}
        ).model_dump(),
        input_shape=[1, 28, 28],
        num_classes=2,
        mean=[0.0],
        std=[1.0],
    )
    return build_model(spec).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed calls per figure")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per runtime")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--batch-norm", action="store_true", help="BN before each activation")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    model = default_mlp(args.batch_norm)
    served, _ = fold_batch_norm(model)
    x = np.random.default_rng(0).random((max(args.batch_sizes), 1, 28, 28), dtype=np.float32)
    example = torch.from_numpy(x[:8])
    opset = ExportConfig().onnx_opset
    rows: list[tuple[str, dict[str, float]]] = []
    # the ONNX exporter reports its progress on stdout: keep the table alone there
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        out = Path(tmp)
        scripted = torch.jit.load(
            str(export_torchscript(served, example, out / "model.torchscript.pt"))
        ).eval()
        fp32 = onnx_session(export_onnx(served, example, out / "model.onnx", opset), args.threads)
        fp16 = onnx_session(
            export_fp16_onnx(served, example, out / "model.fp16.onnx", opset), args.threads
        )
        int8 = quantize_int8(served)
        candidates = [
            ("PyTorch eager (fp32)", torch_call(model)),
            ("TorchScript (fp32, BN folded)", torch_call(scripted)),
            ("ONNX Runtime (fp32)", onnx_call(fp32)),
            ("ONNX Runtime (fp16 weights)", onnx_call(fp16)),
            ("int8 dynamic (PyTorch eager)", torch_call(int8)),
        ]
        for name, call in candidates:
            rows.append((name, latency_batches(call, x, args.batch_sizes, args.runs, args.threads)))

    keys = [f"batch_{size}" for size in args.batch_sizes]
    header = f"{'format':<32}" + "".join(
        f"{'batch ' + k.split('_')[1] + ' (ms)':>16}" for k in keys
    )
    print(
        f"default MLP 784-100-100-100-2, batch_norm={args.batch_norm}, median of {args.runs} "
        f"runs, {args.threads} thread(s), torch {torch.__version__}"
    )
    print(header)
    print("-" * len(header))
    eager = rows[0][1]
    for name, latency in rows:
        cells = "".join(f"{latency[k]:>16.4f}" for k in keys)
        speedup = " ".join(f"x{eager[k] / latency[k]:.2f}" for k in keys)
        print(f"{name:<32}{cells}   vs eager: {speedup}")


if __name__ == "__main__":
    main()
