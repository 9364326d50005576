"""Built-in aitk plugin: the `codegen` use case (a decoder-only code model, KV-cache generation in ONNX Runtime)."""
