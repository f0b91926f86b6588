"""int8 judged on weights trained here: a fine-tuned classifier (digits) and a detector's backbone + FPN
(shapes), in fp32 and in ONNX Runtime int8 and OpenVINO (NNCF) int8.

Random weights say little about int8 accuracy (their activations have no structure to keep), so
featx measures int8 where it has trained weights: ``featx train`` checkpoints and ``featx
train-detector`` checkpoints. For each runtime the report gives the cosine to the fp32 PyTorch output
per level (logits for a classifier, P2..P6 for a detector's pyramid, averaged over the validation
images) and the task metric: top-1 on the validation split, or COCO mAP@0.5 with the int8 pyramid
inside the trained torchvision detector. Calibration uses training images, never validation ones.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from featx.cpu import cpu_info
from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.openvino_export import export_openvino
from featx.deploy.openvino_int8 import mean_cosine, quantize_openvino
from featx.deploy.quantize import quantize_onnx
from featx.deploy.runtimes import Session, open_session
from featx.detection.train import coco_loaders, evaluate_coco, load_detector
from featx.images import to_rgb
from featx.integrations.torchvision import DetectionBackbone
from featx.io import regular_file, scratch_dir, write_json
from featx.models import target_config
from featx.train.data import scan_class_folders
from featx.train.predict import Predictor

__all__ = ["Int8Evaluation", "evaluate_classifier_int8", "evaluate_detector_int8"]


@dataclass
class Int8Evaluation:
    """Per runtime: the task metric and the mean cosine to fp32 per level."""

    task: str
    metric: str
    cpu: str
    rows: list[dict] = field(default_factory=list)  # runtime, metric value, {level: cosine}
    overflow_fix: str = ""  # what both files were quantized with: "enable" = 7-bit weights, "disable" = 8-bit

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Union[str, Path]) -> None:
        write_json(path, self.to_dict())


def _quantized_pair(fp32_onnx: Path, fp32_ir: Path, calib: Path, size: tuple[int, int], count: int, tmp: Path,
                    overflow_fix: str, log: Any) -> tuple[dict[str, Path], str]:
    """Both int8 files, and the overflow fix they were quantized with (the same in both: one CPU resolves it)."""
    onnx_int8, ir_int8 = tmp / "int8.onnx", tmp / "int8.xml"
    fix = quantize_onnx(fp32_onnx, onnx_int8, calib, size, count, overflow_fix=overflow_fix, log=log).overflow_fix
    quantize_openvino(fp32_ir, ir_int8, calib, size, count, overflow_fix=fix, log=log)
    return {"onnxruntime int8": onnx_int8, "openvino int8": ir_int8}, fix


def _exports(cfg: dict, tmp: Path, log: Any) -> tuple[Path, Path]:
    direct = ExportSettings(exporter="torchscript")  # int8 quantizes direct convolutions (the plain graph)
    onnx_path, ir_path = tmp / "fp32.onnx", tmp / "fp32.xml"
    export_onnx(cfg, onnx_path, direct, log=log)
    export_openvino(cfg, ir_path, direct, log=log)
    return onnx_path, ir_path


def _rgb(path: Path) -> Image.Image:
    with Image.open(regular_file(path, "image")) as image:
        rgb = to_rgb(image)
        rgb.load()
    return rgb


def evaluate_classifier_int8(checkpoint: Union[str, Path], data_root: Union[str, Path], calib_count: int = 64,
                             overflow_fix: str = "auto", log: Any = print) -> Int8Evaluation:
    """A fine-tuned classifier (``featx train`` checkpoint) on ``data_root/val``: top-1 and logit cosine
    in fp32 PyTorch, ONNX Runtime int8 and OpenVINO int8 (both calibrated on ``data_root/train``, with
    ``overflow_fix``: with "enable" the 7-bit weights' u8 x s8 sums do not saturate, so a VNNI CPU computes the
    same integer sums as one without VNNI would)."""
    data_root = Path(data_root)
    predictor = Predictor(checkpoint)
    classes = predictor.classes
    scan = scan_class_folders(data_root / "val")  # readable images only, as training's validation saw them
    samples = [(Path(p), classes.index(c)) for p, c in scan.samples if c in classes]
    if not samples:
        raise FileNotFoundError(f"no readable validation images under {data_root / 'val'}/<class>/")
    batch = torch.stack([predictor.transform(_rgb(p)) for p, _ in samples])
    labels = np.array([label for _, label in samples])
    with torch.no_grad():
        reference = predictor.model(batch, mode="tensor").numpy()
    size = tuple(batch.shape[-2:])
    result = Int8Evaluation("classifier", "val top-1 (%)", cpu_info().describe())
    result.rows.append({"runtime": "pytorch fp32", "metric": float((reference.argmax(1) == labels).mean() * 100),
                        "cosine": {"logits": 1.0}})
    with scratch_dir() as tmp:
        tmp = Path(tmp)
        onnx_path, ir_path = _exports(target_config(str(checkpoint)), tmp, log)
        files, result.overflow_fix = _quantized_pair(onnx_path, ir_path, data_root / "train", size, calib_count, tmp,
                                                     overflow_fix, log)
        for name, path in files.items():
            session = open_session(path, "cpu")
            logits = np.concatenate([session.run(batch[i:i + 64].numpy())[0] for i in range(0, len(batch), 64)])
            result.rows.append({"runtime": name, "metric": float((logits.argmax(1) == labels).mean() * 100),
                                "cosine": {"logits": mean_cosine([logits], [reference])}})
    return result


class _RuntimeBackbone(nn.Module):
    """An exported pyramid as a torchvision detection backbone (inference only)."""

    def __init__(self, session: Session, like: DetectionBackbone) -> None:
        super().__init__()
        self.session, self.names, self.out_channels = session, like.names, like.out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        outs = self.session.run(x.detach().cpu().numpy().astype(np.float32))
        return OrderedDict((n, torch.from_numpy(np.ascontiguousarray(o))) for n, o in zip(self.names, outs))


def evaluate_detector_int8(checkpoint: Union[str, Path], data_root: Union[str, Path], calib_count: int = 64,
                           overflow_fix: str = "auto", log: Any = print) -> Int8Evaluation:
    """A ``featx train-detector`` checkpoint on ``data_root`` (COCO layout): COCO mAP@0.5 on val with the
    pyramid (backbone + FPN) in fp32 PyTorch, ONNX Runtime int8 and OpenVINO int8 (calibrated on the
    train images, with ``overflow_fix`` as for a classifier), and the cosine of each pyramid level to fp32
    over the val images."""
    detector, cfg = load_detector(checkpoint)
    _, val_loader = coco_loaders(Path(data_root), cfg)
    pyramid = detector.backbone
    composite = pyramid.body
    result = Int8Evaluation("detector pyramid", "val COCO mAP@0.5", cpu_info().describe())
    # the pyramid's inputs, as the detector normalizes and pads them
    inputs = []
    with torch.no_grad():
        for images, _ in val_loader:
            inputs.append(detector.transform(list(images))[0].tensors)
        references = [[o.numpy() for o in composite(x)] for x in inputs]
    levels = [f.name for f in composite.feature_info]
    result.rows.append({"runtime": "pytorch fp32", "metric": evaluate_coco(detector, val_loader, log)["mAP50"],
                        "cosine": {lv: 1.0 for lv in levels}})
    with scratch_dir() as tmp:
        tmp = Path(tmp)
        weights = tmp / "pyramid.pth"
        torch.save(composite.state_dict(), weights)
        cfg_dict = {"type": f"featx.{cfg.model}", "frozen_stages": cfg.frozen_stages,
                    "neck": {"out_channels": cfg.fpn_channels}, "weights": str(weights)}
        onnx_path, ir_path = _exports(cfg_dict, tmp, log)
        files, result.overflow_fix = _quantized_pair(onnx_path, ir_path, Path(data_root) / "train",
                                                     (cfg.image_size,) * 2, calib_count, tmp, overflow_fix, log)
        for name, path in files.items():
            session = open_session(path, "cpu")
            cos = {lv: [] for lv in levels}
            for x, ref in zip(inputs, references):
                for lv, o, r in zip(levels, session.run(x.numpy()), ref):
                    cos[lv].append(mean_cosine([o], [r]))
            detector.backbone = _RuntimeBackbone(session, pyramid)
            metric = evaluate_coco(detector, val_loader, log)["mAP50"]
            detector.backbone = pyramid
            result.rows.append({"runtime": name, "metric": metric, "cosine": {lv: float(np.mean(v)) for lv, v in cos.items()}})
    return result
