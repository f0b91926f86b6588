"""The ``featx`` command: argument parsing only, one subcommand per library function.

Every subcommand checks its arguments before any heavy work, calls featx's library (the same
functions ``tools/*.py`` and Python users call) and prints the result. Errors print as one line
that says what was expected (``--debug``, before or after the subcommand, shows the traceback).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from mmengine.config import DictAction

from featx.bench import ENTRIES, bench_chart, run_benchmark
from featx.check import DEFAULT_SIZES, check_weights, checkable_models
from featx.demo import run_demo
from featx.deploy.onnx_export import DEFAULT_OPSET, export_onnx, list_profiles, load_profile, target_config
from featx.deploy.metadata import build_from_config, read_metadata
from featx.deploy.parity import GATES, parity
from featx.deploy.int8 import INT8_RUNTIMES, export_int8, resolve_int8_runtime
from featx.deploy.int8_eval import evaluate_classifier_int8, evaluate_detector_int8
from featx.deploy.openvino_export import export_openvino
from featx.deploy.quantize import CALIBRATION_METHODS, OVERFLOW_FIXES
from featx.detection.shapes import make_shapes_dataset
from featx.detection.train import DetectorTrainConfig, train_detector
from featx.errors import FeatxError
from featx.extract_bench import run_extract_benchmark
from featx.extraction import ExtractSettings, extract, verify_store
from featx.images import expand_image_paths
from featx.io import write_json
from featx.models import get_entry
from featx.report import format_table, markdown_table
from featx.stats import mmdet_config, model_stats, model_table, pyramid_table
from featx.train.demo import DIGITS_CONFIG, run_finetune_demo
from featx.train.digits import write_digits_imagefolder
from featx.train.predict import Predictor
from featx.train.runner import train
from featx.viz import render_feature_maps

__all__ = ["main", "build_parser"]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- argument types: bad values are usage errors, caught before any work ----------------------------
def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 224x224 (HxW), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    if h > 16384 or w > 16384:
        raise argparse.ArgumentTypeError(f"size must be at most 16384 on each side, got {text!r}")
    return h, w


def _int_at_least(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {value}" if high is not None
                                             else f"expected an integer >= {low}, got {value}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


class _CfgOptions(DictAction):
    """mmengine's ``key=value`` options, with a usage error (not a traceback) for a malformed item."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if "=" not in v or not v.split("=", 1)[0]]
        if bad:
            parser.error(f"{option_string} takes key=value items, got {' '.join(map(repr, bad))}")
        try:
            super().__call__(parser, namespace, values, option_string)
        except (ValueError, SyntaxError) as e:
            parser.error(f"{option_string}: cannot parse {' '.join(values)!r} ({e})")


def _writable_file(text: str) -> str:
    """A path whose folder exists and is writable (checked before the work, not after)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {parent} is not writable")
    return text


_HELP = argparse.RawDescriptionHelpFormatter


def _parser(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    p = sub.add_parser(name, formatter_class=_HELP, **kwargs)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    return p


# -- list / info / viz / demo -----------------------------------------------------------------
def _add_list(sub) -> None:
    p = _parser(sub, "list", help="list the registered models with their pyramids, size and cost",
                description="Every featx catalogue model: registry name (featx.<name>), timm name (backbones), family, "
                            "output levels, strides, channels, parameters, GFLOPs at 224x224 and 800x1216 "
                            "(torch.utils.flop_counter: 2 x multiply-adds, so twice the 'GFLOPS' torchvision's docs "
                            "list), and the weights / torchvision detectors it loads. Computed on the meta device.",
                epilog="examples:\n  featx list\n  featx list 'ResNet50*' --json\n  featx list --markdown")
    p.add_argument("pattern", nargs="?", help="shell pattern on the name or timm name, e.g. 'ResNet50*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (the README's)")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args) -> int:
    def progress(i: int, n: int, name: str) -> None:
        if n > 3:
            print(f"\r  measuring {i}/{n} {name:<28}", end="", file=sys.stderr, flush=True)

    headers, rows, stats = model_table(args.pattern, progress)
    if len(rows) > 3:
        print("\r" + " " * 50 + "\r", end="", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([st.to_dict() for st in stats], indent=2))
    else:
        print(markdown_table(headers, rows) if args.markdown else format_table(headers, rows))
    return 0


def _add_info(sub) -> None:
    p = _parser(sub, "info", help="pyramid table, mmdet config snippet and timm name of one model",
                epilog="examples:\n  featx info ResNet50FPN\n  featx info featx_resnet50 --size 801x1333 --json")
    p.add_argument("model", help="catalogue or timm name")
    p.add_argument("--size", type=_size, default=(800, 1216), help="input HxW (default 800x1216)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    entry = get_entry(args.model)
    rows = pyramid_table(entry.name, args.size)
    st = model_stats(entry.name, sizes=[args.size, (224, 224)])
    snippet = mmdet_config(entry)
    timm_name = entry.timm_name if entry.kind == "backbone" else None
    if args.json:
        print(json.dumps({"model": entry.name, "timm_name": timm_name, "kind": entry.kind, "input": list(args.size),
                          "levels": [dict(zip(["name", "stride", "channels", "shape"], r)) for r in rows],
                          "params_m": st.params_m, "gflops": st.gflops, "weights": st.weights,
                          "mmdet_config": snippet}, indent=2))
        return 0
    size = f"{args.size[0]}x{args.size[1]}"
    timm_line = (f"timm: timm.create_model({timm_name!r})" if timm_name else
                 f"timm: its backbone is timm.create_model('featx_{entry.arch}', features_only=True)")
    print(f"{entry.name}  ({entry.kind}, {entry.arch})  {timm_line}")
    print(f"params {st.params_m:.1f} M, {st.gflops[size]:.1f} GFLOPs at 1x3x{size}\n")
    print(format_table(["level", "stride", "channels", "output shape"], rows))
    print(f"\nweights: {', '.join(st.weights) or '-'}")
    print("\nmmdet config:\n" + snippet)
    return 0


def _add_viz(sub) -> None:
    p = _parser(sub, "viz", help="draw feature-activation heat maps of every level over an image",
                description="Run a model on an image and write a PNG: the input and, per level, a heat map (mean "
                            "|activation| or first principal component over channels) overlaid at the image's scale, "
                            "titled with level, stride and shape.",
                epilog="examples:\n  featx viz photo.jpg --model ResNet50FPN --weights DEFAULT -o maps.png\n"
                       "  featx viz sample --model ResNet18 --method pca")
    p.add_argument("image", help="image file ('sample' for matplotlib's bundled photo)")
    p.add_argument("--model", default="ResNet50FPN", help="catalogue name (default ResNet50FPN)")
    p.add_argument("--weights", help="weights for the model (featx weights=)")
    p.add_argument("--size", type=_int_at_least(16, 4096), default=512,
                   help="shorter image side fed to the model, 16..4096 (default 512)")
    p.add_argument("--method", choices=["mean", "pca"], default="mean", help="channel reduction (default mean)")
    p.add_argument("-o", "--output", type=_writable_file, default="featx_viz.png",
                   help="PNG path, ending in .png (default featx_viz.png)")
    p.set_defaults(func=_cmd_viz)


def _cmd_viz(args) -> int:
    if Path(args.output).suffix.lower() != ".png":
        raise ValueError(f"featx viz writes PNG images; the output must end in .png, got {args.output}")
    if args.image != "sample" and Path(args.image).is_dir():
        raise ValueError(f"{args.image} is a folder; expected an image file")
    if args.image != "sample" and not Path(args.image).is_file():
        raise FileNotFoundError(f"image not found: {args.image}")
    w, h, panels = render_feature_maps(args.image, args.model, args.output, args.weights, args.size, args.method)
    print(f"wrote {args.output} ({w}x{h} px, {panels} panels: input + {panels - 1} levels)")
    return 0


def _add_demo(sub) -> None:
    p = _parser(sub, "demo", help="run a model on the bundled photo, draw its maps, export to ONNX, check parity",
                description="The demo: a featx pyramid on matplotlib's sample photo with torchvision's detection "
                            "preprocessing; its levels, a feature-map picture, an ONNX export and ONNX Runtime parity. "
                            "Uses torchvision's weights when they are cached, a seeded random init otherwise.",
                epilog="examples:\n  featx demo\n  featx demo --model ResNet18FPN --no-export")
    p.add_argument("--model", default="ResNet50FPN", help="catalogue name (default ResNet50FPN)")
    p.add_argument("--image", default=None, help="image file (default: matplotlib's sample photo)")
    p.add_argument("--threads", type=_int_at_least(1), default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export and parity steps")
    p.add_argument("--export-dir", default="export", help="where the .onnx and .png go (default export/)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_demo(get_entry(args.model).name, args.image, not args.no_export, args.export_dir, out=print, log=_log)


# -- check-weights ----------------------------------------------------------------------------
def _add_check_weights(sub) -> None:
    p = _parser(
        sub, "check-weights",
        help="compare a featx model with the reference library (torchvision / timm) on the same checkpoint",
        description="Build a featx model and its reference, load the same checkpoint into both (each through its "
                    "own loading code), run random inputs at several sizes and compare every level: pass when "
                    "max|featx - ref| <= tol * max|ref|. References: torchvision IntermediateLayerGetter / "
                    "BackboneWithFPN / detector.backbone for the ResNets, torchvision create_feature_extractor for "
                    "VGG, AlexNet, GoogLeNet, Inception-v3, DenseNet and MobileNet, timm features_only for the timm "
                    "families. Exit code 0 only when all pass.",
        epilog="examples:\n"
               "  featx check-weights ResNet50 --weights IMAGENET1K_V2      # torchvision hub cache\n"
               "  featx check-weights SEResNet50 --weights a1_in1k          # timm's hub cache\n"
               "  featx check-weights fasterrcnn_resnet50_fpn_v2 --weights COCO_V1\n"
               "  featx check-weights ResNet50FPN --weights my.pth --reference-weights original.pth\n"
               "  featx check-weights --all --json report.json               # every model, random weights\n",
    )
    p.add_argument("model", nargs="?", help="catalogue name (featx list) or torchvision detector name")
    p.add_argument("--weights", default="random",
                   help="'random' (default: a random reference checkpoint, offline), an enum name "
                        "(DEFAULT, IMAGENET1K_V1, COCO_V1 for detectors), a timm tag, a file or a URL")
    p.add_argument("--reference-weights", default=None,
                   help="what the reference loads (default: the same as --weights); use it to check a "
                        "converted or re-saved checkpoint against the original")
    p.add_argument("--sizes", type=_size, nargs="+", default=None, help="input sizes HxW (default 224x224 333x517)")
    p.add_argument("--batch", type=_int_at_least(1), default=2, help="batch size of each input (default 2)")
    p.add_argument("--tol", type=_non_negative_float, default=1e-5, help="relative tolerance (default 1e-5, fp32)")
    p.add_argument("--all", action="store_true", help="check every model that has a reference")
    p.add_argument("--pattern", default=None, help="with --all: only names matching this shell pattern")
    p.add_argument("--json", metavar="PATH", type=_writable_file, help="also write the report as JSON (atomically)")
    p.set_defaults(func=_cmd_check_weights)


def _cmd_check_weights(args) -> int:
    if args.all == bool(args.model):
        raise ValueError("give a MODEL or --all (not both)")
    names = checkable_models() if args.all else [args.model]
    if args.pattern:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), args.pattern.lower())]
        if not names:
            raise ValueError(f"no model matches {args.pattern!r}")
    sizes = args.sizes or list(DEFAULT_SIZES)
    reports = []
    for i, name in enumerate(names, 1):
        t = time.perf_counter()
        prefix = f"[{i}/{len(names)}] " if len(names) > 1 else ""
        _log(f"{prefix}{name}: checking ...")
        r = check_weights(name, args.weights, args.reference_weights, sizes, args.batch, args.tol)
        reports.append(r)
        verdict = "PASS" if r.passed else "FAIL"
        print(f"\n{name}  [{verdict}]  weights: {r.weights}  reference: {r.reference}  "
              f"({time.perf_counter() - t:.1f} s)")
        if r.error:
            print(f"  error: {r.error}")
            continue
        rows = [[lv.level, lv.size, lv.shape, f"{lv.max_abs:.3g}", f"{lv.max_rel:.3g}", "pass" if lv.passed else "FAIL"]
                for lv in r.levels]
        print(format_table(["level", "input", "shape", "max abs err", "max rel err", f"tol {r.tol:g}"], rows))
        if r.load:
            dropped = r.load["dropped"]
            print(f"  keys: {r.load['loaded']} tensors loaded, {len(dropped)} head keys dropped"
                  + (f" ({', '.join(dropped[:3])}{' ...' if len(dropped) > 3 else ''})" if dropped else "")
                  + f", key map: {r.load['key_map']}")
        for part in r.not_compared:
            print(f"  not compared: {part}")
        if not r.passed:
            print(f"  failing levels: {', '.join(r.failing_levels)}")
    failed = [r.model for r in reports if not r.passed]
    if len(reports) > 1:
        print(f"\n{len(reports) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    if args.json:
        write_json(args.json, {"passed": not failed, "reports": [r.to_dict() for r in reports]})
    return 0 if not failed else 1


# -- export / parity -----------------------------------------------------------------------------
def _add_export(sub) -> None:
    p = _parser(
        sub, "export", help="export a model to ONNX or OpenVINO IR (and int8)",
        description="Export a featx model (a catalogue name, a config file, or a fine-tuned classifier's training "
                    "checkpoint) to ONNX, or with --format openvino to an OpenVINO IR (.xml + .bin, converted by "
                    "OpenVINO's own converter from the ONNX export, featx metadata in its runtime info): "
                    "dynamic batch/height/width by default, named input `input` and outputs "
                    "p2..p6 / c2..c5 / logits, featx metadata (levels, strides, channels, input normalization, model "
                    "config, weights), onnx.checker full check and shape inference; written atomically (nothing is "
                    "left behind on failure). Exporter: dynamo by default (output shapes as formulas of the input "
                    "size, fewer nodes); --exporter torchscript exports several times faster but leaves output dims "
                    f"as free symbols. Profiles shipped with featx: {', '.join(list_profiles())}.",
        epilog="examples:\n"
               "  featx export ResNet50FPN                                  # ./ResNet50FPN_dynamic_fp32.onnx\n"
               "  featx export ResNet50FPN --static 800 1216 -o r50.onnx\n"
               "  featx export configs/models/resnet50_fpn.py --cfg-options model.frozen_stages=-1\n"
               "  featx export ResNet50FPN --weights DEFAULT --profile dynamic_fp16\n"
               "  featx export ResNet50FPN --weights DEFAULT --int8 --calib data/digits/train   # + int8, runtime measured\n"
               "  featx export ResNet50FPN --format openvino --int8 --calib photos/ --max-drop 0.002  # NNCF, accuracy-aware\n",
    )
    p.add_argument("model", help="catalogue name (featx list), a config .py with `model = dict(...)`, or a "
                   "checkpoint .pth written by featx train (the fine-tuned classifier; output `logits`)")
    p.add_argument("-o", "--output", type=_writable_file,
                   help="output .onnx (or .xml) path (default: export/<model>_<profile>.onnx when an export/ folder is "
                        "here, else ./<model>_<profile>.onnx)")
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx",
                   help="onnx (default) or openvino (an IR: .xml + .bin)")
    p.add_argument("--weights", help="weights to load before export (as featx weights=: name, file, URL)")
    p.add_argument("--cfg-options", nargs="+", action=_CfgOptions, default=None,
                   help="override config keys, key=value (model keyword arguments for a catalogue name)")
    p.add_argument("--profile", default="dynamic_fp32", help=f"export profile ({', '.join(list_profiles())}) or a "
                   "path to a .py profile; the flags below override it")
    p.add_argument("--static", nargs=2, type=_int_at_least(1), metavar=("H", "W"), help="fixed input height and width")
    p.add_argument("--batch", type=_int_at_least(1), help="batch size of a --static export (default 1)")
    p.add_argument("--opset", type=_int_at_least(7, 23), help=f"ONNX opset (default {DEFAULT_OPSET}: the dynamo "
                   "exporter's native opset, run by ONNX Runtime >= 1.14, TensorRT 8.6+, OpenVINO 2023+; the dynamo "
                   "exporter writes >= 18, torchscript 7..20)")
    p.add_argument("--fp16", action="store_true", default=None, help="fp16 weights and compute (GPU deployment); "
                   "input/outputs stay fp32 unless --fp16-io")
    p.add_argument("--fp16-io", action="store_true", default=None, help="with --fp16: fp16 input and outputs too")
    p.add_argument("--simplify", action="store_true", default=None, help="run onnxslim on the graph (pip install onnxslim)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], help="torch.onnx exporter (default dynamo)")
    winograd = p.add_mutually_exclusive_group()
    winograd.add_argument("--winograd", dest="winograd", action="store_true", default=None,
                          help="every 3x3 stride-1 conv with 128-256 channels as Winograd F(4x4,3x3) MatMuls")
    winograd.add_argument("--no-winograd", dest="winograd", action="store_false",
                          help="every 3x3 conv a Conv node. Default: the convs measured faster as Winograd in the "
                          "target runtime on this machine, at the --static input or else at 512x512 (measured once "
                          "per CPU, cached; in the file's metadata); off for fp16")
    p.add_argument("--int8", action="store_true", help="also quantize to int8, calibrated on --calib images: "
                   "<output>_int8.onnx (ONNX Runtime static QDQ) or <output>_int8.xml (OpenVINO, NNCF)")
    p.add_argument("--runtime", choices=list(INT8_RUNTIMES), default="auto",
                   help="with --int8: the int8 runtime; auto (default) builds both once, times them on this CPU and "
                   "keeps the faster (cached, recorded in the file)")
    p.add_argument("--max-drop", type=_non_negative_float, default=None,
                   help="with --int8: NNCF's accuracy-aware quantization, layers back to fp32 until the mean cosine to "
                   "fp32 drops by at most this (OpenVINO)")
    p.add_argument("--overflow-fix", choices=list(OVERFLOW_FIXES), default="auto",
                   help="with --int8: 7-bit weights against u8 x s8 saturation on CPUs without VNNI (ONNX Runtime's "
                   "reduce_range, NNCF's overflow fix); auto (default) is this CPU's: enable without VNNI, disable with "
                   "it. Quantizing on a VNNI machine for AVX2-only ones: enable. first_layer_only: NNCF's alone")
    p.add_argument("--calib", metavar="FOLDER", help="with --int8: images to calibrate on (an ImageFolder or any "
                   "folder of images)")
    p.add_argument("--calib-count", type=_int_at_least(1), default=32, help="with --int8: calibration images (default 32)")
    p.add_argument("--calib-size", type=_size, default=(512, 512), help="with --int8: calibration input HxW "
                   "(default 512x512)")
    p.add_argument("--calib-method", choices=list(CALIBRATION_METHODS), default="percentile",
                   help="with --int8: activation range estimate (default percentile 99.99)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init when no weights are given (default 0)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    settings = load_profile(args.profile)
    for name in ("batch", "opset", "fp16", "fp16_io", "simplify", "exporter", "winograd"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.static:
        settings.static_shape = tuple(args.static)
    if settings.fp16_io and not settings.fp16:
        raise ValueError("--fp16-io needs --fp16 (fp16 input and outputs of an fp16 model)")
    if args.int8 and not args.calib:
        raise ValueError("--int8 needs --calib FOLDER: static quantization calibrates on real images")
    if args.int8 and settings.fp16:
        raise ValueError("--int8 quantizes an fp32 export; drop --fp16 (or the fp16 profile)")
    if args.calib and not Path(args.calib).is_dir():
        raise FileNotFoundError(f"calibration folder not found: {args.calib}")
    if (args.runtime != "auto" or args.max_drop is not None or args.overflow_fix != "auto") and not args.int8:
        raise ValueError("--runtime, --max-drop and --overflow-fix choose how --int8 quantizes; add --int8")
    if args.format == "openvino" and args.int8 and args.runtime == "onnxruntime":
        raise ValueError("--format openvino with --int8 --runtime onnxruntime mixes runtimes; pick one")
    if args.int8:
        resolve_int8_runtime(args.runtime, args.max_drop, args.overflow_fix)  # refused now, not after the fp32 export
    cfg = target_config(args.model, args.cfg_options, args.weights)
    suffix = ".xml" if args.format == "openvino" else ".onnx"
    if args.output:
        out = Path(args.output)
    else:
        folder = Path("export") if Path("export").is_dir() else Path(".")
        stem = Path(args.model).stem if args.model.endswith((".pth", ".pt")) else cfg["type"].removeprefix("featx.")
        out = folder / f"{stem}_{settings.name}{suffix}"
    if out.suffix != suffix:
        raise ValueError(f"a {args.format} export must end in {suffix}, got {out}")
    if args.format == "openvino":
        r = export_openvino(cfg, out, settings, seed=args.seed, log=_log)
        print(f"wrote {r.path} + {Path(r.bin_path).name}  ({r.size_mb:.1f} MB, OpenVINO IR, {r.seconds:.1f} s)")
        rows = [["input", v["name"], v["dtype"], v["shape"]] for v in r.inputs]
        rows += [["output", v["name"], v["dtype"], v["shape"]] for v in r.outputs]
    else:
        r = export_onnx(cfg, out, settings, seed=args.seed, log=_log)
        print(f"wrote {r.path}  ({r.size_mb:.1f} MB, opset {r.opset}, {r.exporter} exporter, {r.seconds:.1f} s)")
        rows = [["input", v["name"], v["dtype"], " x ".join(map(str, v["shape"]))] for v in r.inputs]
        rows += [["output", v["name"], v["dtype"], " x ".join(map(str, v["shape"]))] for v in r.outputs]
    print(f"weights: {r.metadata['featx.weights']}  precision: {r.metadata['featx.precision']} "
          f"(io {r.metadata['featx.io_precision']})  Winograd convs: {r.metadata['featx.winograd_convs']}")
    print(format_table(["", "name", "dtype", "shape"], rows))
    if args.int8:
        q = export_int8(cfg, out, settings, args.calib, tuple(args.calib_size), args.calib_count, args.calib_method,
                        runtime="openvino" if args.format == "openvino" and args.runtime == "auto" else args.runtime,
                        max_drop=args.max_drop, seed=args.seed, overflow_fix=args.overflow_fix, log=_log)
        print(f"wrote {q.path}  ({q.size_mb:.1f} MB, int8 for {q.runtime}, calibrated on {q.images} images at "
              f"{q.calib_size[0]}x{q.calib_size[1]}, {q.seconds:.1f} s); check it with: featx parity {q.path}")
    return 0


def _add_parity(sub) -> None:
    p = _parser(
        sub, "parity", help="check an exported file against PyTorch (ONNX Runtime for .onnx, OpenVINO for .xml)",
        description="Run the exported file in its runtime (ONNX Runtime for .onnx, OpenVINO for an IR .xml) and the "
                    "same model in PyTorch (rebuilt from the file's "
                    "featx metadata, on the same device) on random inputs at several sizes and batch sizes, and "
                    "gate every output on max|ort-ref| / max|ref| and cosine similarity. Gates: fp32 5e-4 and "
                    "0.99999 (CPU, CUDA with TF32 off); TF32 1e-2 and 0.9999; fp16 5e-2 and 0.999; int8 0.5 and 0.99 "
                    "(on the bundled photo, as int8 ranges come from real images). Reports the "
                    "runtime and execution provider that really ran and its latency against PyTorch's. Exit 0 only "
                    "when all pass. "
                    "Nothing a file names is downloaded: weights in its metadata are used only when already on this "
                    "machine (else pass --model and --weights).",
        epilog="examples:\n"
               "  featx parity export/ResNet50FPN_dynamic_fp32.onnx\n"
               "  featx parity r50.onnx --device cuda --json parity.json\n"
               "  featx parity r50.onnx --sizes 512x512 801x1333 --batch 1 2\n",
    )
    p.add_argument("onnx", metavar="FILE", help="an .onnx file or an OpenVINO .xml written by featx export")
    p.add_argument("--model", help="compare with this model (catalogue name or config .py) instead of the one the "
                   "file's metadata names; random init with --seed unless --weights")
    p.add_argument("--weights", help="with --model: weights to load into it")
    p.add_argument("--seed", type=int, default=0, help="with --model: init seed (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                   help="auto: CUDA when onnxruntime-gpu and a GPU are present, else CPU; cuda fails loudly without")
    p.add_argument("--sizes", type=_size, nargs="+", help="input sizes HxW (default 512x512 800x1216 801x1333 333x517)")
    p.add_argument("--batch", type=_int_at_least(1), nargs="+", default=[1, 2],
                   help="batch sizes: every size at the first, the first size at the rest (default 1 2)")
    p.add_argument("--repeats", type=_int_at_least(0), default=5, help="timed runs for the latency median (0 to skip; default 5)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (both sides); uses the TF32 gate")
    p.add_argument("--max-rel", type=_non_negative_float, help="override the gate's max|err|/max|ref|")
    p.add_argument("--min-cos", type=float, help="override the gate's minimum cosine (-1..1)")
    p.add_argument("--threads", type=_int_at_least(1), help="CPU threads for both runtimes")
    p.add_argument("--json", metavar="PATH", type=_writable_file, help="also write the report as JSON (atomically)")
    p.set_defaults(func=_cmd_parity)


def _cmd_parity(args) -> int:
    if args.min_cos is not None and not -1 <= args.min_cos <= 1:
        raise ValueError(f"--min-cos must be in -1..1, got {args.min_cos}")
    if args.weights and not args.model:
        raise ValueError("--weights goes with --model (the model to compare with)")
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = read_metadata(args.onnx)
    gate = None
    if args.max_rel is not None or args.min_cos is not None:
        base = GATES["fp16" if meta.get("precision") == "fp16" else "tf32" if args.tf32 else "fp32"]
        gate = replace(base, max_rel=args.max_rel if args.max_rel is not None else base.max_rel,
                       min_cos=args.min_cos if args.min_cos is not None else base.min_cos, why="set on the command line")
    model = build_from_config(target_config(args.model, None, args.weights), args.seed) if args.model else None
    r = parity(args.onnx, model=model, device=args.device, sizes=args.sizes, batches=args.batch, repeats=args.repeats,
                   tf32=args.tf32, gate=gate, threads=args.threads, log=_log, meta=meta)
    print(f"{args.onnx}: {meta.get('model_config', {}).get('type', '?')}  precision {r.precision}  "
          f"runtime {r.runtime}")
    print(f"gate: max|err|/max|ref| <= {r.gate['max_rel']:g}, cosine >= {r.gate['min_cos']} ({r.gate['why']})\n")
    rows = [[x.output, f"{x.batch}x{x.size[0]}x{x.size[1]}", x.shape, f"{x.max_abs:.3g}", f"{x.rel:.3g}",
             f"{x.cosine:.7f}", "pass" if x.passed else "FAIL"] for x in r.results]
    print(format_table(["output", "input", "shape", "max abs err", "err/max|ref|", "cosine", "verdict"], rows))
    if r.latency_ms:
        lat = r.latency_ms
        print(f"\nlatency {'x'.join(map(str, lat['input']))}, median of {lat['repeats']} after warm-up: "
              f"{r.runtime.split()[0]} {lat['runtime']:.1f} ms, PyTorch eager {lat['torch_eager']:.1f} ms "
              f"(runtime/PyTorch {lat['runtime_over_torch']:.2f}x, {torch.get_num_threads()} torch threads)")
    failed = [f"{x.output}@{x.batch}x{x.size[0]}x{x.size[1]}" for x in r.results if not x.passed]
    print(f"\n{'PASS' if r.passed else 'FAIL'}: {len(r.results) - len(failed)} of {len(r.results)} outputs within the gate"
          + (f"; failing: {', '.join(failed[:10])}" if failed else ""))
    if args.json:
        write_json(args.json, r.to_dict())
    return 0 if r.passed else 1


# -- fine-tuning -----------------------------------------------------------------------------------
def _add_train(sub) -> None:
    p = _parser(
        sub, "train", help="fine-tune a featx backbone + classification head on an ImageFolder (mmengine Runner)",
        description="Fine-tune a classifier (featx backbone + pooling/dropout/linear head) with mmengine's Runner, "
                    "as a config in configs/finetune/ describes: data (ImageFolder with train/ and val/, or one folder "
                    "split by a seeded ratio), model, optimizer (paramwise backbone LR), warm-up + cosine schedule. "
                    "The data is checked before training (unreadable files skipped and counted; mismatched classes "
                    "are an error). Writes to the work dir: epoch_N.pth (last) and best_accuracy_top1_epoch_N.pth "
                    "(atomic), history.json, metrics.json, curves.png, confusion_matrix.png, and mmengine's logs.",
        epilog="examples:\n"
               "  featx make-digits data/digits && featx train configs/finetune/resnet18_digits.py\n"
               "  featx train configs/finetune/resnet50_imagefolder.py --data-root ~/data/flowers --work-dir runs/flowers\n"
               "  featx train configs/finetune/resnet18_digits.py --resume          # continue the last run\n"
               "  featx train CONFIG --cfg-options train_cfg.max_epochs=30 optim_wrapper.optimizer.lr=0.01\n"
               "  torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch   # DDP: gloo on CPU, nccl on GPU\n",
    )
    p.add_argument("config", help="an mmengine config file (configs/finetune/*.py)")
    p.add_argument("--work-dir", help="where checkpoints, logs and pictures go (default: work_dirs/<config name>)")
    p.add_argument("--data-root", help="ImageFolder root; overrides the config's train and val data_root")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="resume optimizer, schedule and epoch from CHECKPOINT, or without a value from the last "
                        "checkpoint in the work dir")
    p.add_argument("--amp", action="store_true", help="mixed precision (mmengine AmpOptimWrapper; needs CUDA)")
    p.add_argument("--cfg-options", nargs="+", action=_CfgOptions, default=None,
                   help="override config keys, key=value (e.g. train_cfg.max_epochs=5)")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                   help="'pytorch' when started by torchrun (distributed data parallel)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    start = time.perf_counter()
    r = train(args.config, work_dir=args.work_dir, resume=args.resume, amp=args.amp, cfg_options=args.cfg_options,
              launcher=args.launcher, data_root=args.data_root)
    final = (r.get("metrics") or {}).get("final")
    if final:
        top5 = f"  top-5 {final['top5']:.2f}%" if final.get("top5") is not None else ""
        print(f"\nval top-1 {final['top1']:.2f}%{top5}  mean per-class {final['mean_class']:.2f}%  "
              f"(epoch {final['epoch']}, {final['count']} images, {time.perf_counter() - start:.0f} s)")
        print(f"best checkpoint: {r['best_checkpoint']}\nlast checkpoint: {r['last_checkpoint']}")
        print(f"pictures: {Path(r['work_dir']) / 'curves.png'}, {Path(r['work_dir']) / 'confusion_matrix.png'}")
    return 0


def _add_predict(sub) -> None:
    p = _parser(
        sub, "predict", help="classify images with a fine-tuned checkpoint (top-k classes and probabilities)",
        description="Classify image files (or every image under given folders) with a checkpoint written by "
                    "featx train. The checkpoint's own config gives the model and the validation preprocessing; "
                    "its class names label the output. Unreadable files are reported and make the exit code 1.",
        epilog="examples:\n"
               "  featx predict work_dirs/resnet18_digits/best_accuracy_top1_epoch_12.pth data/digits/val/7\n"
               "  featx predict CHECKPOINT a.jpg b.png --topk 3 --json predictions.json\n",
    )
    p.add_argument("checkpoint", help="a training checkpoint (epoch_N.pth or best_*.pth)")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--topk", type=_int_at_least(1), default=5, help="classes per image (default 5)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (or stdout with no FILE)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32, help="images per forward pass (default 32)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    if args.json not in (None, "-"):
        _writable_file(args.json)
    paths = expand_image_paths(args.images)
    if not paths:
        raise FileNotFoundError(f"no images found in {' '.join(args.images)}")
    results = Predictor(args.checkpoint, device=args.device).predict(paths, topk=args.topk, batch_size=args.batch_size)
    failed = [r for r in results if r.error]
    if args.json == "-":
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        rows = []
        for r in results:
            if r.error:
                rows.append([r.image, "-", "-", f"error: {r.error}"])
            else:
                c, _, p = r.top[0]
                rows.append([r.image, c, f"{p:.4f}", "  ".join(f"{c2} {p2:.3f}" for c2, _, p2 in r.top[1:])])
        print(format_table(["image", "class", "prob", f"next {len(results[0].top) - 1 if results[0].top else 0}"], rows))
        if args.json:
            write_json(args.json, [r.to_dict() for r in results])
    if failed:
        _log(f"{len(failed)} of {len(results)} images could not be read")
        return 1
    return 0


def _add_make_digits(sub) -> None:
    p = _parser(
        sub, "make-digits", help="write scikit-learn's handwritten digits as an ImageFolder (train/ and val/)",
        description="Write the 1,797 real 8x8 handwritten digit scans bundled with scikit-learn as PNGs: "
                    "OUT/train/<digit>/*.png and OUT/val/<digit>/*.png, split per class by a seeded ratio.",
        epilog="examples:\n  featx make-digits data/digits\n  featx make-digits data/digits --val-ratio 0.3 --seed 1 --overwrite\n",
    )
    p.add_argument("out", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--val-ratio", type=float, default=0.2, help="fraction of each class for val (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_make_digits)


def _cmd_make_digits(args) -> int:
    r = write_digits_imagefolder(args.out, args.val_ratio, args.seed, args.overwrite)
    print(f"wrote {r['train']} train and {r['val']} val images of {r['classes']} classes to {r['root']}")
    return 0


def _add_finetune_demo(sub) -> None:
    p = _parser(
        sub, "finetune-demo", help="digits end to end: make the ImageFolder, train ResNet-18, predict, export to ONNX",
        description="The fine-tuning demo: writes scikit-learn's digits as an ImageFolder (if missing), trains "
                    f"{DIGITS_CONFIG} (ResNet-18 from scratch; about 4-5 minutes on 2 CPU cores), predicts a few "
                    "validation images with the best checkpoint, exports it to ONNX and checks ONNX Runtime parity.",
        epilog="examples:\n  featx finetune-demo\n  featx finetune-demo --cfg-options train_cfg.max_epochs=3   # a quick look\n",
    )
    p.add_argument("--work-dir", default="work_dirs/finetune_demo", help="default work_dirs/finetune_demo")
    p.add_argument("--data-root", default="data/digits", help="where the digits ImageFolder is (or goes)")
    p.add_argument("--config", default=DIGITS_CONFIG, help=f"default {DIGITS_CONFIG}")
    p.add_argument("--cfg-options", nargs="+", action=_CfgOptions, default=None, help="passed to featx train")
    p.set_defaults(func=_cmd_finetune_demo)


def _cmd_finetune_demo(args) -> int:
    return run_finetune_demo(args.work_dir, args.data_root, args.config, args.cfg_options, out=print, log=_log)


# -- detector training -------------------------------------------------------------------------
def _add_train_detector(sub) -> None:
    p = _parser(
        sub, "train-detector", help="fine-tune a torchvision Faster R-CNN with a featx backbone on COCO-format data",
        description="Train torchvision's Faster R-CNN with a featx composite as its backbone on a COCO-format dataset "
                    "(ROOT/train, ROOT/val, ROOT/annotations/instances_{train,val}.json), then report COCO bbox mAP "
                    "on val (pycocotools). With --make-shapes it first writes a synthetic shapes dataset there. "
                    "The trained weights are saved only with --out.",
        epilog="examples:\n"
               "  featx train-detector data/shapes --make-shapes --minutes 15 --out work_dirs/shapes\n"
               "  featx train-detector data/coco_subset --model ResNet50FPN --weights DEFAULT --iters 2000 --out runs/coco\n",
    )
    p.add_argument("root", help="dataset root (COCO layout)")
    p.add_argument("--make-shapes", action="store_true", help="generate the shapes dataset into ROOT first")
    p.add_argument("--num-train", type=_int_at_least(1), default=600, help="with --make-shapes: training images (default 600)")
    p.add_argument("--num-val", type=_int_at_least(1), default=150, help="with --make-shapes: validation images (default 150)")
    p.add_argument("--model", default="ResNet18FPN", help="featx composite with an FPN (default ResNet18FPN)")
    p.add_argument("--weights", help="weights for the composite (default: random init)")
    p.add_argument("--iters", type=_int_at_least(1), default=500, help="training iterations (cosine schedule length; default 500)")
    p.add_argument("--minutes", type=_non_negative_float, default=15.0, help="stop training after this many minutes (default 15)")
    p.add_argument("--batch", type=_int_at_least(1), default=8, help="images per iteration (default 8)")
    p.add_argument("--lr", type=_non_negative_float, default=0.02, help="peak SGD learning rate (default 0.02)")
    p.add_argument("--warmup", type=_int_at_least(0), default=50, help="linear warm-up iterations (default 50)")
    p.add_argument("--image-size", type=_int_at_least(32, 2048), default=128, help="resize images to this side (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for detector.pth and metrics.json (without it nothing is saved)")
    p.set_defaults(func=_cmd_train_detector)


def _cmd_train_detector(args) -> int:
    entry = get_entry(args.model)
    if entry.pyramid is None:
        raise ValueError(f"train-detector needs a composite with an FPN (a pyramid of equal channels), got the backbone "
                         f"{entry.name}; try {entry.name}FPN")
    root = Path(args.root)
    if args.make_shapes:
        print(f"writing the shapes dataset ({args.num_train} train / {args.num_val} val) to {root} ...", flush=True)
        make_shapes_dataset(root, args.num_train, args.num_val, seed=args.seed)
    if not args.out:
        _log("note: no --out given, so the trained detector is not saved (metrics are printed only)")
    cfg = DetectorTrainConfig(model=entry.name, weights=args.weights, image_size=args.image_size, batch_size=args.batch,
                              lr=args.lr, warmup_iters=args.warmup, max_iters=args.iters, time_limit_s=args.minutes * 60,
                              seed=args.seed)
    r = train_detector(root, cfg, Path(args.out) if args.out else None, log=lambda m: print(m, flush=True))
    m = r["metrics"]
    first, last = r["losses"][:10], r["losses"][-10:]
    print(f"\n{cfg.model} Faster R-CNN: {r['iters']} iterations in {r['seconds'] / 60:.1f} min; "
          f"loss {sum(first) / len(first):.3f} -> {sum(last) / len(last):.3f}")
    print(f"val COCO bbox: mAP@0.5 {m['mAP50']:.3f}  mAP@[.5:.95] {m['mAP']:.3f}  mAP@0.75 {m['mAP75']:.3f}")
    if args.out:
        write_json(Path(args.out) / "metrics.json", {k: v for k, v in r.items() if k != "losses"} | {
            "loss_first10": first, "loss_last10": last})
        print(f"checkpoint: {r['checkpoint']}")
    return 0


# -- benchmark ---------------------------------------------------------------------------------
def _add_bench(sub) -> None:
    p = _parser(
        sub, "bench", help="time featx against torchvision / timm / ONNX Runtime in one run",
        description="Time each entry on the same random input with the same thread count: median and 25-75% "
                    "spread after warm-up, images/s, ratio to torchvision's resnet_fpn_backbone in this run, GFLOPs "
                    "(torch.utils.flop_counter) and achieved GFLOP/s against the measured fp32 matmul peak. GFLOPs "
                    "are the direct convolutions' for every entry, so the Winograd entries (featx_optimized, featx_ort "
                    "on the CPU) show an effective rate that can pass the peak. "
                    f"Entries: {', '.join(ENTRIES)} (featx_compile and the int8 entries only when named). The report "
                    "names the CPU (model, AVX2/AVX-512/VNNI/AMX) and the runtime versions.",
        epilog="examples:\n"
               "  featx bench --threads 2 --json bench.json --png bench.png\n"
               "  featx bench --model ResNet18FPN --sizes 512x512 --batch 1 --entries torchvision featx featx_optimized\n",
    )
    p.add_argument("--model", default="ResNet50FPN", help="featx composite (default ResNet50FPN)")
    p.add_argument("--sizes", type=_size, nargs="+", default=[(512, 512), (800, 1216)], help="HxW (default 512x512 800x1216)")
    p.add_argument("--batch", type=_int_at_least(1), nargs="+", default=[1, 4], help="every size at the first, the first size at the rest")
    p.add_argument("--entries", nargs="+", default=list(ENTRIES[:6]), choices=list(ENTRIES), help="what to time "
                   "(default: the first six)")
    p.add_argument("--threads", type=_int_at_least(1), default=None, help="torch/ORT threads (default: torch's)")
    p.add_argument("--repeats", type=_int_at_least(1), default=5, help="timed runs per entry and input (default 5)")
    p.add_argument("--warmup", type=_int_at_least(0), default=1, help="untimed runs first (default 1)")
    p.add_argument("--memory", action="store_true", help="also measure peak RSS in a fresh process per entry")
    winograd = p.add_mutually_exclusive_group()
    winograd.add_argument("--winograd", dest="winograd", action="store_true", default=None,
                          help="every 128-256-channel 3x3 conv as Winograd in the optimized and exported entries")
    winograd.add_argument("--no-winograd", dest="winograd", action="store_false",
                          help="direct convolutions only (default: the convs measured faster as Winograd in each "
                          "entry's runtime on this CPU)")
    p.add_argument("--json", metavar="PATH", type=_writable_file, help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--png", metavar="PATH", type=_writable_file, help="write a bar chart of latency relative to torchvision")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    get_entry(args.model)  # an unknown name fails now, not after the matmul peak
    r = run_benchmark(args.model, args.sizes, args.batch, args.entries, args.warmup, args.repeats, args.memory,
                      log=_log, winograd=args.winograd)
    headers = ["entry", "input", "median ms", "p25-p75 ms", "img/s", "vs torchvision", "GFLOPs", "GFLOP/s", "of peak"]
    vs_ov = bool(r["fastest_fp32_vs_openvino_direct"])
    if vs_ov:
        headers.append("vs OV direct")
    if args.memory:
        headers.append("peak RSS MB")
    rows = []
    for x in r["rows"]:
        if "error" in x:
            rows.append([x["entry"], "x".join(map(str, x.get("input", []))) or "-", "failed: " + x["error"][:60]]
                        + [""] * (len(headers) - 3))
            continue
        row = [x["entry"], "x".join(map(str, x["input"])), f"{x['median_ms']:.0f}", f"{x['p25_ms']:.0f}-{x['p75_ms']:.0f}",
               f"{x['images_per_s']:.2f}", f"{x['vs_torchvision']:.2f}x" if x["vs_torchvision"] else "-",
               f"{x['gflops']:.1f}", f"{x['achieved_gflops_s']:.1f}", f"{100 * x['of_peak']:.0f}%"]
        if vs_ov:
            row.append(f"{x['vs_openvino_direct']:.2f}x" if "vs_openvino_direct" in x else "-")
        if args.memory:
            row.append(str(x.get("peak_rss_mb")))
        rows.append(row)
    print(f"{r['model']} ({r['params_m']} M params) | {r['threads']} threads | fp32 matmul peak "
          f"{r['matmul_peak_gflops']:.1f} GFLOP/s | Winograd {r['winograd']}")
    print(f"CPU: {r['cpu']['model']} ({r['cpu']['isa']}) | {r['versions']}")
    print(markdown_table(headers, rows) if args.markdown else format_table(headers, rows))
    for best in r["fastest_fp32_vs_openvino_direct"]:
        print(f"featx's fastest fp32 path at {'x'.join(map(str, best['input']))}: {best['entry']}, "
              f"{best['ratio']:.2f}x of OpenVINO on the direct export (median of per-round ratios)")
    if args.json:
        write_json(args.json, r)
    if args.png:
        bench_chart(r, args.png)
        print(f"chart: {args.png}")
    return 0


def _add_int8_report(sub) -> None:
    p = _parser(
        sub, "int8-report", help="int8 accuracy on weights trained here: fp32 vs ONNX Runtime int8 vs OpenVINO int8",
        description="Quantize a model trained here with ONNX Runtime and with OpenVINO/NNCF (calibrated on training "
                    "images) and compare with fp32 PyTorch on the validation split: the task metric (a classifier's "
                    "top-1, a detector's COCO mAP@0.5 with the int8 pyramid inside the trained detector) and the "
                    "cosine to fp32 of every output level. Random weights say little about int8; these do.",
        epilog="examples:\n"
               "  featx int8-report --classifier work_dirs/resnet18_digits/best_accuracy_top1_epoch_12.pth "
               "--data data/digits\n"
               "  featx int8-report --detector work_dirs/shapes/detector.pth --data data/shapes --json int8.json\n",
    )
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--classifier", metavar="CHECKPOINT", help="a featx train checkpoint (ImageFolder at --data)")
    kind.add_argument("--detector", metavar="CHECKPOINT", help="a featx train-detector detector.pth (COCO at --data)")
    p.add_argument("--data", required=True, help="the dataset it was trained on (train/ calibrates, val/ evaluates)")
    p.add_argument("--calib-count", type=_int_at_least(1), default=64, help="calibration images (default 64)")
    p.add_argument("--overflow-fix", choices=[f for f in OVERFLOW_FIXES if f != "first_layer_only"], default="auto",
                   help="7-bit weights in both runtimes (as in featx export --int8); auto (default) is this CPU's: "
                   "enable without VNNI, disable with it. With enable the u8 x s8 sums cannot saturate, so a VNNI machine "
                   "computes the integer sums an AVX2-only CPU would")
    p.add_argument("--json", metavar="PATH", type=_writable_file, help="also write the report as JSON")
    p.set_defaults(func=_cmd_int8_report)


def _cmd_int8_report(args) -> int:
    checkpoint = args.classifier or args.detector
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if not (Path(args.data) / "val").is_dir():
        raise FileNotFoundError(f"{args.data} has no val/ folder to evaluate on")
    evaluate = evaluate_classifier_int8 if args.classifier else evaluate_detector_int8
    r = evaluate(checkpoint, args.data, args.calib_count, overflow_fix=args.overflow_fix, log=_log)
    levels = list(r.rows[0]["cosine"])
    print(f"{r.task} {checkpoint} | CPU: {r.cpu} | int8 overflow fix: {r.overflow_fix}")
    print(format_table(["runtime", r.metric] + [f"cosine {lv}" for lv in levels],
                       [[row["runtime"], f"{row['metric']:.4g}"] + [f"{row['cosine'][lv]:.5f}" for lv in levels]
                        for row in r.rows]))
    if args.json:
        r.save(args.json)
    return 0


# -- extract --------------------------------------------------------------------------------------
def _add_extract(sub) -> None:
    p = _parser(
        sub, "extract", help="features of a whole image collection into a resumable, sharded store",
        description="Run a model over every image of SOURCE (a folder, searched recursively; a .txt or .csv list of "
                    "paths, first column; or a quoted glob) and store each image's features in the folder --out: "
                    "pooled vectors per level (avg, max or GeM over the image's own region, not the padding) or the "
                    "cropped maps, fp16 or fp32, with the model config, weights, preprocessing and featx version in "
                    "manifest.json. Images are resized (shorter side --size, or --resize HxW), padded to the model's "
                    "coarsest stride and batched by shape; DataLoader workers read, hash and decode them. Unreadable "
                    "images are listed (manifest.json 'skipped'), never fatal.\n\n"
                    "Rerun the same command after a kill and it does only what is missing. Under torchrun each "
                    "process takes its share of the same plan (same store, rank 0 merges). Read the store with "
                    "featx.FeatureStore (embeddings memory-mapped, no copy). In Python: featx.extract(MODEL, SOURCE, OUT, "
                    "**settings).",
        epilog="examples:\n"
               "  featx extract ResNet50 photos/ --out features/ --levels C5 --pool gem\n"
               "  featx extract ResNet50FPN list.csv --out fpn/ --maps --dtype fp32 --size 512\n"
               "  featx extract ResNet18 'photos/**/*.jpg' --out f/ --runtime openvino --workers 4\n"
               "  torchrun --nproc-per-node 2 -m featx extract ResNet50 photos/ --out features/ --threads 1\n"
               "  featx extract --verify features/\n")
    p.add_argument("model", nargs="?", help="catalogue name (featx list) or a config .py with `model = dict(...)`")
    p.add_argument("source", nargs="?", help="folder, .txt/.csv list of paths, or a quoted glob pattern")
    p.add_argument("--out", help="the store folder (created; an existing store with the same settings is resumed)")
    p.add_argument("--verify", metavar="STORE", help="instead: recompute a sample of STORE's images and compare")
    p.add_argument("--weights", help="weights to load (as featx weights=: name such as DEFAULT, file, URL)")
    p.add_argument("--cfg-options", nargs="+", action=_CfgOptions, default=None,
                   help="override config keys, key=value (model keyword arguments for a catalogue name)")
    p.add_argument("--levels", nargs="+", help="levels to store, P3 P4 or P3,P4 (default: every output, e.g. C2 C3 C4 C5)")
    p.add_argument("--pool", choices=("avg", "max", "gem"), default="avg", help="pooling per level (default avg)")
    p.add_argument("--gem-p", type=_non_negative_float, default=3.0, help="GeM exponent (default 3)")
    p.add_argument("--maps", action="store_true", help="store the cropped maps instead of pooled vectors")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="stored precision (default fp16)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=_int_at_least(8, 16384), default=224, help="shorter side in pixels (default 224)")
    size.add_argument("--resize", type=_size, metavar="HxW", help="resize every image to HxW instead")
    p.add_argument("--batch", type=_int_at_least(1), default=32, help="images per batch (default 32)")
    p.add_argument("--workers", type=_int_at_least(0), default=2, help="DataLoader workers (default 2)")
    p.add_argument("--threads", type=_int_at_least(1), help="threads of the runtime that runs the model (default: torch's count); give each torchrun process its share")
    p.add_argument("--shard-batches", type=_int_at_least(1), default=16,
                   help="batches per shard file (default 16); fewer lose less work to a kill, more make fewer files")
    p.add_argument("--runtime", choices=("torch", "onnxruntime", "openvino"), default="torch",
                   help="where the model runs (default torch; the others export it first)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    p.add_argument("--json", metavar="PATH", type=_writable_file, help="also write the run's summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args) -> int:
    if args.verify:
        report = verify_store(args.verify, log=print)
        if args.json:
            write_json(args.json, report)
        return 0 if report["passed"] else 1
    if not (args.model and args.source and args.out):
        raise ValueError("featx extract needs MODEL SOURCE --out STORE (or --verify STORE); see --help")
    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [lv for item in args.levels for lv in item.split(",") if lv] if args.levels else None  # P3,P4 or P3 P4
    settings = ExtractSettings(size=args.size, resize=args.resize, levels=levels, pool=args.pool, gem_p=args.gem_p,
                               maps=args.maps, dtype=args.dtype, batch_size=args.batch, workers=args.workers,
                               runtime=args.runtime, device=args.device, shard_batches=args.shard_batches)
    if args.model.endswith((".pth", ".pt")):
        raise ValueError("featx extract takes a backbone (catalogue name or config .py), not a training checkpoint")
    model = target_config(args.model, args.cfg_options, args.weights)
    result = extract(model, args.source, args.out, settings, progress=not args.no_progress, log=_log)
    if args.json and result.rank == 0:
        write_json(args.json, result.summary)
    return 0


def _add_bench_extract(sub) -> None:
    p = _parser(
        sub, "bench-extract", help="benchmark featx extract against the model alone, and the store's reads",
        description="In one run: featx extract end to end (workers decode, the model runs, vectors are pooled and "
                    "written) against the same model on the same batches decoded beforehand, for scikit-learn's "
                    "digits upscaled to --size and for generated 640x480 JPEGs (ratio: extract / raw; the target is "
                    ">= 0.9); then a store of 100k pooled 2048-d fp16 vectors: opening it, 100k lookups, "
                    "embeddings() without a copy. Runs alternate (--rounds) and the best of each is kept. The report "
                    "names the CPU and its ISA flags.",
        epilog="examples:\n"
               "  featx bench-extract                               # ResNet18FPN, 512 digits, 256 JPEGs, 2 workers\n"
               "  featx bench-extract --collections jpeg --jpegs 512 --json bench_extract.json\n")
    p.add_argument("--model", default="ResNet18FPN", help="featx model (default ResNet18FPN)")
    p.add_argument("--collections", nargs="+", choices=("digits", "jpeg"), default=["digits", "jpeg"],
                   help="which collections (default both)")
    p.add_argument("--digits", type=_int_at_least(1), default=512, help="digits images (default 512 of 1797)")
    p.add_argument("--jpegs", type=_int_at_least(1), default=256, help="generated 640x480 JPEGs (default 256)")
    p.add_argument("--size", type=_int_at_least(8, 16384), default=224, help="shorter side (default 224)")
    p.add_argument("--batch", type=_int_at_least(1), default=32, help="images per batch (default 32)")
    p.add_argument("--workers", type=_int_at_least(0), default=2, help="DataLoader workers (default 2)")
    p.add_argument("--threads", type=_int_at_least(1), help="torch intra-op threads (default: torch's)")
    p.add_argument("--rounds", type=_int_at_least(1), default=2, help="alternated runs of each side (default 2)")
    p.add_argument("--no-store", action="store_true", help="skip the 100k-entry store part")
    p.add_argument("--json", metavar="PATH", type=_writable_file, help="write the report as JSON")
    p.set_defaults(func=_cmd_bench_extract)


def _cmd_bench_extract(args) -> int:
    get_entry(args.model)  # an unknown name fails now, not after the collections are generated
    run_extract_benchmark(args.model, jpegs=args.jpegs, digits=args.digits, size=args.size, batch=args.batch,
                          workers=args.workers, threads=args.threads, rounds=args.rounds, collections=args.collections,
                          store=not args.no_store, json_path=args.json, log=print)
    return 0


_SUBCOMMANDS: list[Callable] = [_add_list, _add_info, _add_demo, _add_export, _add_parity, _add_check_weights, _add_viz,
                                _add_train, _add_predict, _add_make_digits, _add_finetune_demo, _add_train_detector, _add_extract,
                                _add_bench, _add_bench_extract, _add_int8_report]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featx", description="featx: detection-ready feature extractors.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _error_line(e: BaseException) -> str:
    """featx's own messages whole (they are written to be read); others' first line."""
    text = str(e).strip()
    if isinstance(e, KeyError) and not isinstance(e, FeatxError) and text.startswith(("'", '"')):
        text = text[1:-1]
    if not isinstance(e, FeatxError):
        text = text.splitlines()[0] if text else ""
    return " ".join(text.split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # SIGTERM ends the command as Ctrl-C does: files being written are removed, not left half-written
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        terminated = str(e).startswith("terminated")
        _log(f"featx {args.command}: {'terminated' if terminated else 'interrupted'}; nothing half-written is left")
        return 143 if terminated else 130
    except BrokenPipeError:  # `featx ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as e:  # one clear line; the trace only with --debug
        if getattr(args, "debug", False):
            raise
        _log(f"featx {args.command}: error: {type(e).__name__}: {_error_line(e)}")
        _log("  (run with --debug for the full traceback)")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def _default_sigterm_in_child() -> None:
    # a process forked while a command runs (OpenVINO's telemetry sends from a forked child, which hangs in
    # getaddrinfo on a machine without internet) must die on SIGTERM, not inherit _terminate: a Python
    # handler runs only when the blocking C call returns, so the parent's exit waited ~10 min to join it
    if signal.getsignal(signal.SIGTERM) is _terminate:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_child)


if __name__ == "__main__":
    raise SystemExit(main())
