"""TorchScript and ONNX export, parity checks, registry."""
