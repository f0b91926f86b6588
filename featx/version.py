"""The featx version (one place; pyproject.toml reads it from here), and the versions of the runtimes that
reports and measured-choice caches name."""
__version__ = "0.1.0"


def software_versions() -> str:
    """torch / ONNX Runtime / OpenVINO versions, for cache keys and reports."""
    import torch

    parts = [f"torch {torch.__version__}"]
    try:
        import onnxruntime
        parts.append(f"onnxruntime {onnxruntime.__version__}")
    except ImportError:
        pass
    try:
        import openvino
        parts.append(f"openvino {openvino.get_version().split('-')[0]}")
    except ImportError:
        pass
    return ", ".join(parts)
