"""The ``featx`` command: one subcommand per tool. ``tools/*.py`` call the same functions.

Errors print as one line (plus a hint); ``--debug`` shows the trace.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Optional, Sequence

__all__ = ["main", "build_parser"]


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 224x224 (HxW), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


# -- check-weights ----------------------------------------------------------------------------
def _add_check_weights(sub) -> None:
    p = sub.add_parser(
        "check-weights",
        help="compare a featx model with the reference library (torchvision / timm) on the same checkpoint",
        description="Build a featx model and its reference, load the same checkpoint into both (each through its "
                    "own loading code), run random inputs at several sizes and compare every level: pass when "
                    "max|featx - ref| <= tol * max|ref|. References: torchvision IntermediateLayerGetter / "
                    "BackboneWithFPN / detector.backbone for the ResNets, torchvision create_feature_extractor for "
                    "VGG, AlexNet, GoogLeNet, Inception-v3, DenseNet and MobileNet, timm features_only for the timm "
                    "families. Exit code 0 only when all pass.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument("--batch", type=int, default=2, help="batch size of each input (default 2)")
    p.add_argument("--tol", type=float, default=1e-5, help="relative tolerance (default 1e-5, fp32)")
    p.add_argument("--all", action="store_true", help="check every model that has a reference")
    p.add_argument("--pattern", default=None, help="with --all: only names matching this shell pattern")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON (atomically)")
    p.set_defaults(func=_cmd_check_weights)


def _cmd_check_weights(args) -> int:
    import fnmatch

    from featx.check import DEFAULT_SIZES, check_weights, checkable_models
    from featx.report import format_table

    if args.all == bool(args.model):
        raise SystemExit("featx check-weights: error: give a MODEL or --all (not both)")
    names = checkable_models() if args.all else [args.model]
    if args.pattern:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), args.pattern.lower())]
        if not names:
            raise SystemExit(f"featx check-weights: error: no model matches {args.pattern!r}")
    sizes = args.sizes or list(DEFAULT_SIZES)
    reports = []
    for i, name in enumerate(names, 1):
        t = time.perf_counter()
        prefix = f"[{i}/{len(names)}] " if len(names) > 1 else ""
        print(f"{prefix}{name}: checking ...", file=sys.stderr, flush=True)
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
            print(f"  keys: {r.load['loaded']} tensors loaded, {len(r.load['dropped'])} head keys dropped"
                  + (f" ({', '.join(r.load['dropped'][:3])}{' ...' if len(r.load['dropped']) > 3 else ''})" if r.load["dropped"] else "")
                  + f", key map: {r.load['key_map']}")
        for part in r.not_compared:
            print(f"  not compared: {part}")
        if not r.passed:
            print(f"  failing levels: {', '.join(r.failing_levels)}")
    failed = [r.model for r in reports if not r.passed]
    if len(reports) > 1:
        print(f"\n{len(reports) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    if args.json:
        from featx.io import write_json

        write_json(args.json, {"passed": not failed, "reports": [r.to_dict() for r in reports]})
    return 0 if not failed else 1


# -- list / info / viz / demo -----------------------------------------------------------------
def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list the registered models with their pyramids, size and cost",
                       description="Every featx model: mmengine type (featx.<name>), timm name, family, output levels, strides, "
                                   "channels, parameters, GFLOPs at 224x224 and 800x1216 (torch.utils.flop_counter: "
                                   "2 x multiply-adds, so twice the 'GFLOPS' torchvision's docs list), and the "
                                   "torchvision weights / detectors it loads. Computed on the meta device.",
                       epilog="examples:\n  featx list\n  featx list 'ResNet50*' --json\n  featx list --markdown",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", help="shell pattern on the name or timm name, e.g. 'ResNet50*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (the README's)")
    p.set_defaults(func=_cmd_list)


def model_table_rows(pattern: Optional[str] = None) -> tuple[list[str], list[list], list[dict]]:
    from featx.models import list_models
    from featx.stats import model_stats

    names = list_models(pattern)
    if not names:
        raise ValueError(f"no model matches {pattern!r}; featx list shows them all")
    stats = []
    for i, n in enumerate(names, 1):
        if len(names) > 3:
            print(f"\r  measuring {i}/{len(names)} {n:<28}", end="", file=sys.stderr, flush=True)
        stats.append(model_stats(n))
    if len(names) > 3:
        print("\r" + " " * 50 + "\r", end="", file=sys.stderr, flush=True)
    headers = ["model", "timm name", "family", "levels", "strides", "channels", "params (M)", "GFLOPs 224",
               "GFLOPs 800x1216", "weights"]
    rows = []
    for st in stats:
        rows.append([st.name, st.timm_name, st.family, f"{st.levels[0]}-{st.levels[-1]}", "/".join(map(str, st.strides)),
                     "/".join(map(str, st.channels)) if len(set(st.channels)) > 1 else str(st.channels[0]),
                     f"{st.params_m:.1f}", f"{st.gflops['224x224']:.1f}", f"{st.gflops['800x1216']:.1f}",
                     ", ".join(st.weights) or "-"])
    return headers, rows, [st.to_dict() for st in stats]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _cmd_list(args) -> int:
    from featx.report import format_table

    headers, rows, stats = model_table_rows(args.pattern)
    if args.json:
        print(json.dumps(stats, indent=2))
    elif args.markdown:
        print(markdown_table(headers, rows))
    else:
        print(format_table(headers, rows))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="pyramid table, mmdet config snippet and timm name of one model",
                       epilog="examples:\n  featx info ResNet50FPN\n  featx info featx_resnet50_retinafpn --size 801x1333 --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="catalogue or timm name")
    p.add_argument("--size", type=_size, default=(800, 1216), help="input HxW (default 800x1216)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    from featx.models import get_entry
    from featx.report import format_table
    from featx.stats import mmdet_config, model_stats, pyramid_table

    entry = get_entry(args.model)
    rows = pyramid_table(entry.name, args.size)
    st = model_stats(entry.name, sizes=[args.size, (224, 224)])
    snippet = mmdet_config(entry)
    if args.json:
        print(json.dumps({"model": entry.name, "timm_name": entry.timm_name, "kind": entry.kind, "input": list(args.size),
                          "levels": [dict(zip(["name", "stride", "channels", "shape"], r)) for r in rows],
                          "params_m": st.params_m, "gflops": st.gflops, "weights": st.weights,
                          "mmdet_config": snippet}, indent=2))
        return 0
    size = f"{args.size[0]}x{args.size[1]}"
    print(f"{entry.name}  ({entry.kind}, {entry.arch})  timm: timm.create_model({entry.timm_name!r})")
    print(f"params {st.params_m:.1f} M, {st.gflops[size]:.1f} GFLOPs at 1x3x{size}\n")
    print(format_table(["level", "stride", "channels", "output shape"], rows))
    print(f"\nweights: {', '.join(st.weights) or '-'}")
    print("\nmmdet config:\n" + snippet)
    return 0


def _add_viz(sub) -> None:
    p = sub.add_parser("viz", help="draw feature-activation heat maps of every level over an image",
                       description="Run a model on an image and write a PNG: the input and, per level, a heat map "
                                   "(mean |activation| or first principal component over channels) overlaid at the "
                                   "image's scale, titled with level, stride and shape.",
                       epilog="examples:\n  featx viz photo.jpg --model ResNet50FPN --weights DEFAULT -o maps.png\n"
                              "  featx viz photo.jpg --model ResNet18 --method pca",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="image file ('sample' for matplotlib's bundled photo)")
    p.add_argument("--model", default="ResNet50FPN", help="catalogue name (default ResNet50FPN)")
    p.add_argument("--weights", help="weights for the model (featx weights=)")
    p.add_argument("--size", type=int, default=512, help="shorter image side fed to the model (default 512)")
    p.add_argument("--method", choices=["mean", "pca"], default="mean", help="channel reduction (default mean)")
    p.add_argument("-o", "--output", default="featx_viz.png", help="PNG path (default featx_viz.png)")
    p.set_defaults(func=_cmd_viz)


def run_viz(image: str, model_name: str, out: str, weights: Optional[str] = None, size: int = 512,
            method: str = "mean") -> tuple[int, int, int]:
    import torch
    import torchvision.transforms.v2.functional as TF

    import featx
    from featx.images import IMAGENET_MEAN, IMAGENET_STD, load_image, sample_image_path
    from featx.viz import feature_figure

    img = load_image(sample_image_path() if image == "sample" else image)
    img = TF.resize(img, size, antialias=True)
    x = TF.normalize(img, list(IMAGENET_MEAN), list(IMAGENET_STD))[None]
    torch.manual_seed(0)
    model = featx.create_model(model_name, weights=weights).eval()
    with torch.inference_mode():
        feats = model(x)
    titles = [f"{f.name}  stride {f.stride}  {f.channels}x{o.shape[-2]}x{o.shape[-1]}" for f, o in zip(model.feature_info, feats)]
    note = model.load_report.source if model.load_report else "random init (seed 0)"
    return feature_figure(img, [f[0] for f in feats], titles, out, method, f"{model_name}: {method} activation | weights: {note}")


def _cmd_viz(args) -> int:
    w, h, panels = run_viz(args.image, args.model, args.output, args.weights, args.size, args.method)
    print(f"wrote {args.output} ({w}x{h} px, {panels} panels: input + {panels - 1} levels)")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run a model on the bundled photo and print its pyramid",
                       epilog="example: featx demo --model ResNet18FPN")
    p.add_argument("--model", default="ResNet50FPN")
    p.add_argument("--image", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export and parity steps")
    p.set_defaults(func=lambda a: __import__("featx.demo", fromlist=["main"]).main(
        ["--model", a.model] + (["--image", a.image] if a.image else []) + (["--threads", str(a.threads)] if a.threads else [])
        + (["--no-export"] if a.no_export else [])))


# -- export / parity -----------------------------------------------------------------------------
def _find_profile(name: str):
    from pathlib import Path

    candidates = [Path(name)] if name.endswith(".py") else []
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidates.append(root / "export" / f"{name}.py")
    for c in candidates:
        if c.is_file():
            return c
    known = sorted({p.stem for root in (Path.cwd(), Path(__file__).resolve().parents[1])
                    for p in (root / "export").glob("*.py")})
    raise ValueError(f"unknown export profile {name!r}; known: {', '.join(known) or 'none found'}")


def _model_cfg_from_args(target: str, cfg_options: Optional[dict], weights: Optional[str]) -> dict:
    from pathlib import Path

    if target.endswith((".pth", ".pt")) and Path(target).is_file():
        # a fine-tuned classifier: the training checkpoint carries its config and weights
        from featx.train.predict import classifier_config_from_checkpoint

        if cfg_options or weights is not None:
            raise ValueError("a training checkpoint brings its own config and weights; drop --cfg-options/--weights")
        return classifier_config_from_checkpoint(target)
    if target.endswith(".py"):
        from mmengine.config import Config

        if not Path(target).is_file():
            raise FileNotFoundError(f"config file not found: {target}")
        cfg = Config.fromfile(target)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        if "model" not in cfg:
            raise ValueError(f"{target} defines no `model = dict(type=...)`")
        model = cfg.model.to_dict()
    else:
        from featx.models import get_entry

        model = {"type": f"featx.{get_entry(target).name}", **(cfg_options or {})}
    if weights is not None:
        model["weights"] = weights
    return model


def _add_export(sub) -> None:
    from mmengine.config import DictAction

    from featx.onnx import DEFAULT_OPSET

    p = sub.add_parser(
        "export", help="export a model to ONNX",
        description="Export a featx model (a catalogue name or a config file) to ONNX: dynamic batch/height/width "
                    "by default, named input `input` and outputs p2..p6 / c2..c5, featx metadata (levels, strides, "
                    "channels, input normalization, model config, weights), onnx.checker full check and shape "
                    "inference; written atomically (nothing is left behind on failure). Exporter: dynamo by default "
                    "(output shapes as formulas of the input size, fewer nodes); --exporter torchscript exports several times faster "
                    "but leaves output dims as free symbols.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  featx export ResNet50FPN                                  # export/ResNet50FPN_dynamic_fp32.onnx\n"
               "  featx export ResNet50FPN --static 800 1216 -o r50.onnx\n"
               "  featx export configs/models/resnet50_fpn.py --cfg-options model.frozen_stages=-1\n"
               "  featx export ResNet50FPN --weights DEFAULT --profile dynamic_fp16\n"
               "  featx export ResNet50FPN --weights DEFAULT --int8 --calib data/digits/train   # + int8 QDQ\n",
    )
    p.add_argument("model", help="catalogue name (featx list), a config .py with `model = dict(...)`, or a "
                   "checkpoint .pth written by featx train (the fine-tuned classifier; output `logits`)")
    p.add_argument("-o", "--output", help="output .onnx path (default: export/<model>_<profile>.onnx)")
    p.add_argument("--weights", help="weights to load before export (as featx weights=: name, file, URL)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                   help="override config keys, key=value (model kwargs for a catalogue name)")
    p.add_argument("--profile", default="dynamic_fp32", help="export profile in export/ (dynamic_fp32, static_fp32, "
                   "dynamic_fp16) or a path; flags below override it")
    p.add_argument("--static", nargs=2, type=int, metavar=("H", "W"), help="fixed input height and width")
    p.add_argument("--batch", type=int, help="batch size of a --static export (default 1)")
    p.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET}: the dynamo exporter's native "
                   "opset, run by ONNX Runtime >= 1.14, TensorRT 8.6+, OpenVINO 2023+)")
    p.add_argument("--fp16", action="store_true", default=None, help="fp16 weights and compute (GPU deployment); "
                   "input/outputs stay fp32 unless --fp16-io")
    p.add_argument("--fp16-io", action="store_true", default=None, help="with --fp16: fp16 input and outputs too")
    p.add_argument("--simplify", action="store_true", default=None, help="run onnxslim on the graph (pip install onnxslim)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], help="torch.onnx exporter (default dynamo)")
    p.add_argument("--no-winograd", dest="winograd", action="store_false", default=None,
                   help="keep every 3x3 conv a Conv node (default: 3x3 stride-1 convs with 128-256 channels are "
                   "exported as Winograd F(4x4,3x3) MatMuls, ~1.3x faster in ONNX Runtime CPU; off for fp16)")
    p.add_argument("--int8", action="store_true", help="also quantize: static int8 (ONNX Runtime QDQ, per-channel "
                   "int8 weights, uint8 activations) calibrated on --calib images; writes <output>_int8.onnx")
    p.add_argument("--calib", metavar="FOLDER", help="with --int8: images to calibrate on (an ImageFolder or any "
                   "folder of images)")
    p.add_argument("--calib-count", type=int, default=32, help="with --int8: calibration images (default 32)")
    p.add_argument("--calib-size", type=_size, default=(512, 512), help="with --int8: calibration input HxW "
                   "(default 512x512)")
    p.add_argument("--calib-method", choices=["percentile", "minmax", "entropy"], default="percentile",
                   help="with --int8: activation range estimate (default percentile 99.99)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init when no weights are given (default 0)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from pathlib import Path

    from mmengine.config import Config

    from featx.onnx import ExportSettings, export_onnx
    from featx.report import format_table

    profile_path = _find_profile(args.profile)
    prof = Config.fromfile(str(profile_path)).to_dict()
    fields = set(ExportSettings.__dataclass_fields__)
    unknown = set(prof) - fields
    if unknown:
        raise ValueError(f"profile {profile_path} has unknown keys {sorted(unknown)}; allowed: {sorted(fields)}")
    settings = ExportSettings(**prof)
    for name in ("batch", "opset", "fp16", "fp16_io", "simplify", "exporter", "winograd"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.static:
        settings.static_shape = tuple(args.static)
    if settings.static_shape is not None:
        settings.static_shape = tuple(settings.static_shape)
    cfg = _model_cfg_from_args(args.model, args.cfg_options, args.weights)
    if args.output:
        out = Path(args.output)
    else:
        folder = Path("export") if Path("export").is_dir() else Path(".")
        stem = Path(args.model).stem if args.model.endswith((".pth", ".pt")) else cfg["type"].removeprefix("featx.")
        out = folder / f"{stem}_{settings.name}.onnx"
    if out.suffix != ".onnx":
        raise ValueError(f"output must end in .onnx, got {out}")
    if args.int8 and not args.calib:
        raise ValueError("--int8 needs --calib FOLDER: static quantization calibrates on real images")
    if args.int8 and settings.fp16:
        raise ValueError("--int8 quantizes an fp32 export; drop --fp16 (or the fp16 profile)")
    r = export_onnx(cfg, out, settings, seed=args.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"wrote {r.path}  ({r.size_mb:.1f} MB, opset {r.opset}, {r.exporter} exporter, {r.seconds:.1f} s)")
    print(f"weights: {r.metadata['featx.weights']}  precision: {r.metadata['featx.precision']} "
          f"(io {r.metadata['featx.io_precision']})")
    rows = [["input", v["name"], v["dtype"], v["shape"]] for v in r.inputs]
    rows += [["output", v["name"], v["dtype"], v["shape"]] for v in r.outputs]
    print(format_table(["", "name", "dtype", "shape"], [[a, b, c, " x ".join(map(str, d))] for a, b, c, d in rows]))
    if args.int8:
        import dataclasses
        import tempfile

        from featx.quantize import quantize_onnx

        q_out = out.with_name(out.stem + "_int8.onnx")
        with tempfile.TemporaryDirectory() as tmp:
            source = out
            if r.metadata["featx.winograd_convs"] != "0":  # int8 quantizes the direct convolutions
                source = Path(tmp) / "direct.onnx"
                export_onnx(cfg, source, dataclasses.replace(settings, winograd=False), seed=args.seed,
                            log=lambda m: print(m + " (without Winograd, for int8)", file=sys.stderr, flush=True))
            q = quantize_onnx(source, q_out, args.calib, tuple(args.calib_size), args.calib_count, args.calib_method,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"wrote {q.path}  ({q.size_mb:.1f} MB, int8 QDQ, calibrated on {q.images} images at "
              f"{q.calib_size[0]}x{q.calib_size[1]} ({q.method}), {q.seconds:.1f} s); check it with: featx parity {q.path}")
    return 0


def _add_parity(sub) -> None:
    p = sub.add_parser(
        "parity", help="check an exported ONNX file against PyTorch in ONNX Runtime",
        description="Run the ONNX file in ONNX Runtime and the same model in PyTorch (rebuilt from the file's "
                    "featx metadata, on the same device) on random inputs at several sizes and batch sizes, and "
                    "gate every output on max|ort-ref| / max|ref| and cosine similarity. Gates: fp32 5e-4 and "
                    "0.99999 (CPU, CUDA with TF32 off); TF32 1e-2 and 0.9999; fp16 5e-2 and 0.999. Reports the "
                    "execution provider that really ran and the ORT vs PyTorch latency. Exit 0 only when all pass.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  featx parity export/ResNet50FPN_dynamic_fp32.onnx\n"
               "  featx parity r50.onnx --device cuda --json parity.json\n"
               "  featx parity r50.onnx --sizes 512x512 801x1333 --batch 1 2\n",
    )
    p.add_argument("onnx", help="an .onnx file written by featx export")
    p.add_argument("--model", help="compare with this model (catalogue name or config .py) instead of the one the "
                   "file's metadata names; random init with --seed unless --weights")
    p.add_argument("--weights", help="with --model: weights to load into it")
    p.add_argument("--seed", type=int, default=0, help="with --model: init seed (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                   help="auto: CUDA when onnxruntime-gpu and a GPU are present, else CPU; cuda fails loudly without")
    p.add_argument("--sizes", type=_size, nargs="+", help="input sizes HxW (default 512x512 800x1216 801x1333 333x517)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2], help="batch sizes: every size at the first, the "
                   "first size at the rest (default 1 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs for the latency median (0 to skip; default 5)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (both sides); uses the TF32 gate")
    p.add_argument("--max-rel", type=float, help="override the gate's max|err|/max|ref|")
    p.add_argument("--min-cos", type=float, help="override the gate's minimum cosine")
    p.add_argument("--threads", type=int, help="CPU threads for both runtimes")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON (atomically)")
    p.set_defaults(func=_cmd_parity)


def _cmd_parity(args) -> int:
    from dataclasses import replace

    import torch

    from featx.onnx import GATES, read_metadata, ort_parity
    from featx.report import format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    meta = read_metadata(args.onnx)
    gate = None
    if args.max_rel is not None or args.min_cos is not None:
        base = GATES["fp16" if meta.get("precision") == "fp16" else "tf32" if args.tf32 else "fp32"]
        gate = replace(base, max_rel=args.max_rel if args.max_rel is not None else base.max_rel,
                       min_cos=args.min_cos if args.min_cos is not None else base.min_cos, why="set on the command line")
    model = None
    if args.model:
        from featx.onnx import build_from_config

        model = build_from_config(_model_cfg_from_args(args.model, None, args.weights), args.seed)
    r = ort_parity(args.onnx, model=model, device=args.device, sizes=args.sizes, batches=args.batch, repeats=args.repeats,
                   tf32=args.tf32, gate=gate, threads=args.threads, log=lambda m: print(m, file=sys.stderr, flush=True),
                   meta=meta)
    print(f"{args.onnx}: {meta.get('model_config', {}).get('type', '?')}  precision {r.precision}  "
          f"device {r.device}  providers used: {', '.join(r.providers)}")
    print(f"gate: max|err|/max|ref| <= {r.gate['max_rel']:g}, cosine >= {r.gate['min_cos']} ({r.gate['why']})\n")
    rows = [[x.output, f"{x.batch}x{x.size[0]}x{x.size[1]}", x.shape, f"{x.max_abs:.3g}", f"{x.rel:.3g}",
             f"{x.cosine:.7f}", "pass" if x.passed else "FAIL"] for x in r.results]
    print(format_table(["output", "input", "shape", "max abs err", "err/max|ref|", "cosine", "verdict"], rows))
    if r.latency_ms:
        lat = r.latency_ms
        print(f"\nlatency {'x'.join(map(str, lat['input']))}, median of {lat['repeats']} after warm-up: "
              f"ORT {lat['ort']:.1f} ms, PyTorch eager {lat['torch_eager']:.1f} ms "
              f"(ORT/PyTorch {lat['ort_over_torch']:.2f}x, {torch.get_num_threads()} torch threads)")
    failed = [f"{x.output}@{x.batch}x{x.size[0]}x{x.size[1]}" for x in r.results if not x.passed]
    print(f"\n{'PASS' if r.passed else 'FAIL'}: {len(r.results) - len(failed)} of {len(r.results)} outputs within the gate"
          + (f"; failing: {', '.join(failed[:10])}" if failed else ""))
    if args.json:
        from featx.io import write_json

        write_json(args.json, r.to_dict())
    return 0 if r.passed else 1


# -- detector training -------------------------------------------------------------------------
def _add_train_detector(sub) -> None:
    p = sub.add_parser(
        "train-detector", help="fine-tune a torchvision Faster R-CNN with a featx backbone on COCO-format data",
        description="Train torchvision's Faster R-CNN with a featx composite as its backbone on a COCO-format dataset "
                    "(ROOT/train, ROOT/val, ROOT/annotations/instances_{train,val}.json), then report COCO bbox mAP "
                    "on val (pycocotools). With --make-shapes it first writes a synthetic shapes dataset there.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  featx train-detector data/shapes --make-shapes --minutes 15 --out work_dirs/shapes\n"
               "  featx train-detector data/coco_subset --model ResNet50FPN --weights DEFAULT --iters 2000\n",
    )
    p.add_argument("root", help="dataset root (COCO layout)")
    p.add_argument("--make-shapes", action="store_true", help="generate the shapes dataset into ROOT first")
    p.add_argument("--num-train", type=int, default=600, help="with --make-shapes: training images (default 600)")
    p.add_argument("--num-val", type=int, default=150, help="with --make-shapes: validation images (default 150)")
    p.add_argument("--model", default="ResNet18FPN", help="featx composite (default ResNet18FPN)")
    p.add_argument("--weights", help="weights for the composite (default: random init)")
    p.add_argument("--iters", type=int, default=500, help="training iterations (cosine schedule length; default 500)")
    p.add_argument("--minutes", type=float, default=15.0, help="stop training after this many minutes (default 15)")
    p.add_argument("--batch", type=int, default=8, help="images per iteration (default 8)")
    p.add_argument("--lr", type=float, default=0.02, help="peak SGD learning rate (default 0.02)")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up iterations (default 50)")
    p.add_argument("--image-size", type=int, default=128, help="resize images to this side (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for detector.pth and metrics.json")
    p.set_defaults(func=_cmd_train_detector)


def _cmd_train_detector(args) -> int:
    from pathlib import Path

    from featx.detection.train import DetectorTrainConfig, train_detector

    root = Path(args.root)
    if args.make_shapes:
        from featx.detection.shapes import make_shapes_dataset

        print(f"writing the shapes dataset ({args.num_train} train / {args.num_val} val) to {root} ...", flush=True)
        make_shapes_dataset(root, args.num_train, args.num_val, seed=args.seed)
    cfg = DetectorTrainConfig(model=args.model, weights=args.weights, image_size=args.image_size, batch_size=args.batch,
                              lr=args.lr, warmup_iters=args.warmup, max_iters=args.iters, time_limit_s=args.minutes * 60, seed=args.seed)
    r = train_detector(root, cfg, Path(args.out) if args.out else None, log=lambda m: print(m, flush=True))
    m = r["metrics"]
    first, last = r["losses"][:10], r["losses"][-10:]
    print(f"\n{cfg.model} Faster R-CNN: {r['iters']} iterations in {r['seconds'] / 60:.1f} min; "
          f"loss {sum(first) / len(first):.3f} -> {sum(last) / len(last):.3f}")
    print(f"val COCO bbox: mAP@0.5 {m['mAP50']:.3f}  mAP@[.5:.95] {m['mAP']:.3f}  mAP@0.75 {m['mAP75']:.3f}")
    if args.out:
        from featx.io import write_json

        write_json(Path(args.out) / "metrics.json", {k: v for k, v in r.items() if k != "losses"} | {
            "loss_first10": first, "loss_last10": last})
        print(f"checkpoint: {r['checkpoint']}")
    return 0


# -- benchmark ---------------------------------------------------------------------------------
def _add_bench(sub) -> None:
    from featx.bench import ENTRIES

    p = sub.add_parser(
        "bench", help="time featx against torchvision / timm / ONNX Runtime in one run",
        description="Time each entry on the same random input with the same thread count: median and 25-75% "
                    "spread after warm-up, images/s, ratio to torchvision's resnet_fpn_backbone in this run, GFLOPs "
                    "(torch.utils.flop_counter) and achieved GFLOP/s against the measured fp32 matmul peak. GFLOPs "
                    "are the direct convolutions' for every entry, so the Winograd entries (featx_optimized, featx_ort "
                    "on the CPU) show an effective rate that can pass the peak. "
                    f"Entries: {', '.join(ENTRIES)} (featx_compile and featx_ort_int8 only when named).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  featx bench --threads 2 --json bench.json --png bench.png\n"
               "  featx bench --model ResNet18FPN --sizes 512x512 --batch 1 --entries torchvision featx featx_optimized\n",
    )
    p.add_argument("--model", default="ResNet50FPN", help="featx composite (default ResNet50FPN)")
    p.add_argument("--sizes", type=_size, nargs="+", default=[(512, 512), (800, 1216)], help="HxW (default 512x512 800x1216)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="every size at the first, the first size at the rest")
    p.add_argument("--entries", nargs="+", default=list(ENTRIES[:5]), choices=list(ENTRIES), help="what to time")
    p.add_argument("--threads", type=int, default=None, help="torch/ORT threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per entry and input (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--memory", action="store_true", help="also measure peak RSS in a fresh process per entry")
    p.add_argument("--no-winograd", dest="winograd", action="store_false",
                   help="featx_optimized and featx_ort on direct convolutions only (to see what Winograd adds)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--png", metavar="PATH", help="write a bar chart of latency relative to torchvision")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    import torch

    from featx.bench import run_benchmark
    from featx.report import format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    r = run_benchmark(args.model, args.sizes, args.batch, args.entries, args.warmup, args.repeats, args.memory,
                      log=lambda m: print(m, file=sys.stderr, flush=True), winograd=args.winograd)
    headers = ["entry", "input", "median ms", "p25-p75 ms", "img/s", "vs torchvision", "GFLOPs", "GFLOP/s", "of peak"]
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
        if args.memory:
            row.append(str(x.get("peak_rss_mb")))
        rows.append(row)
    print(f"{r['model']} ({r['params_m']} M params) | {r['threads']} threads | fp32 matmul peak "
          f"{r['matmul_peak_gflops']:.1f} GFLOP/s | {r['device']} | Winograd {'on' if r['winograd'] else 'off'}")
    print(markdown_table(headers, rows) if args.markdown else format_table(headers, rows))
    if args.json:
        from featx.io import write_json

        write_json(args.json, r)
    if args.png:
        _bench_chart(r, args.png)
        print(f"chart: {args.png}")
    return 0


def _bench_chart(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from featx.io import atomic_path

    rows = [x for x in r["rows"] if "error" not in x and x.get("vs_torchvision")]
    inputs = list(dict.fromkeys("x".join(map(str, x["input"])) for x in rows))
    entries = list(dict.fromkeys(x["entry"] for x in rows))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    width = 0.8 / max(1, len(entries))
    for j, e in enumerate(entries):
        vals = [next((x["vs_torchvision"] for x in rows if x["entry"] == e and "x".join(map(str, x["input"])) == i), 0)
                for i in inputs]
        ax.bar([k + j * width for k in range(len(inputs))], vals, width, label=e)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([k + width * (len(entries) - 1) / 2 for k in range(len(inputs))], inputs)
    ax.set_ylabel("latency / torchvision (lower is faster)")
    ax.set_title(f"{r['model']}, {r['threads']} threads, {r['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


from featx.train.commands import add_finetune_demo, add_make_digits, add_predict, add_train  # noqa: E402

_SUBCOMMANDS: list[Callable] = [_add_list, _add_info, _add_demo, _add_export, _add_parity, _add_check_weights, _add_viz,
                                add_train, add_predict, add_make_digits, add_finetune_demo, _add_train_detector, _add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featx", description="featx: detection-ready feature extractors.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("featx: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line; the trace only with --debug
        if args.debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"featx {args.command}: error: {type(e).__name__}: {first}", file=sys.stderr)
        print("  (run with --debug for the full traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
