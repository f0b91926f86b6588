"""Deployment: ONNX export (``onnx_export``), the featx metadata an exported file carries
(``metadata``), ONNX Runtime parity (``parity``) and int8 quantization (``quantize``)."""
