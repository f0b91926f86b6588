"""``featx export``, ``parity`` and ``int8-report``: files for runtimes, checked against PyTorch."""
from __future__ import annotations

from pathlib import Path

from featx.cli.common import CfgOptions, add_command, cosine, hxw, int_at_least, log, non_negative_float, writable_file
from featx.options import (CALIBRATION_METHODS, DEFAULT_OPSET, DEVICE_KINDS, INT8_RUNTIMES, OVERFLOW_FIXES, TARGETS,
                           WINOGRAD_MODES, list_profiles)

__all__ = ["COMMANDS"]


def _add_export(sub) -> None:
    p = add_command(
        sub, "export", help="export a model to ONNX or OpenVINO IR (and int8)",
        description="Export a featx model (a catalogue name, a config file, or a fine-tuned classifier's training "
                    "checkpoint) to ONNX, or with --format openvino to an OpenVINO IR (.xml + .bin, converted by "
                    "OpenVINO's own converter from the ONNX export, featx metadata in its runtime info): "
                    "dynamic batch/height/width by default, named input `input` and outputs "
                    "p2..p6 / c2..c5 / logits, featx metadata (levels, strides, channels, input normalization, model "
                    "config, weights), onnx.checker full check and shape inference; written atomically (nothing is "
                    "left behind on failure). Exporter: dynamo by default (output shapes as formulas of the input "
                    "size, fewer nodes); --exporter torchscript exports several times faster but leaves output dims "
                    "as free symbols. The graph is plain (BN folded, direct convolutions) and the same on every "
                    "machine; --winograd auto asks featx.accel for the 3x3 convolutions measured faster as Winograd in "
                    "the file's runtime on this CPU (the graph then depends on the CPU that exported it). "
                    f"Profiles shipped with featx: {', '.join(list_profiles())}.",
        epilog="examples:\n"
               "  featx export ResNet50FPN                                  # ./ResNet50FPN_dynamic_fp32.onnx\n"
               "  featx export ResNet50FPN --static 800 1216 -o r50.onnx\n"
               "  featx export configs/models/resnet50_fpn.py --cfg-options model.frozen_stages=-1\n"
               "  featx export ResNet50FPN --weights DEFAULT --profile dynamic_fp16\n"
               "  featx export ResNet50FPN --weights DEFAULT --int8 --calib data/digits/train   # + int8 (ONNX Runtime)\n"
               "  featx export ResNet50FPN --format openvino --int8 --calib photos/ --max-drop 0.002  # NNCF, accuracy-aware\n"
               "  featx export ResNet50FPN --target cuda --profile dynamic_fp16          # for ONNX Runtime CUDA / TensorRT\n"
               "  featx export ResNet50FPN --profile cpu_winograd                        # featx.accel: Winograd timed here\n",
    )
    p.add_argument("model", help="catalogue name (featx list), a config .py with `model = dict(...)`, or a "
                   "checkpoint .pth written by featx train (the fine-tuned classifier; output `logits`)")
    p.add_argument("-o", "--output", type=writable_file,
                   help="output .onnx (or .xml) path (default: export/<model>_<profile>.onnx when an export/ folder is "
                        "here, else ./<model>_<profile>.onnx)")
    p.add_argument("--format", choices=["onnx", "openvino", "pt2", "aoti"], default="onnx",
                   help="onnx (default); openvino (an IR: .xml + .bin); pt2 (a torch.export ExportedProgram: "
                        "torch.export.load(path).module()); aoti (an AOTInductor package compiled for --device: "
                        "torch._inductor.aoti_load_package(path), or AOTIModelPackageLoader in C++)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="with --format aoti: the device the package is compiled for (default cpu)")
    p.add_argument("--weights", help="weights to load before export (as featx weights=: name, file, URL)")
    p.add_argument("--cfg-options", nargs="+", action=CfgOptions, default=None,
                   help="override config keys, key=value (model keyword arguments for a catalogue name)")
    p.add_argument("--profile", default="dynamic_fp32", help=f"export profile ({', '.join(list_profiles())}) or a "
                   "path to a .py profile; the flags below override it")
    p.add_argument("--static", nargs=2, type=int_at_least(1), metavar=("H", "W"), help="fixed input height and width")
    p.add_argument("--batch", type=int_at_least(1), help="batch size of a --static export (default 1)")
    p.add_argument("--opset", type=int_at_least(7, 23), help=f"ONNX opset (default {DEFAULT_OPSET}: the dynamo "
                   "exporter's native opset, run by ONNX Runtime >= 1.14, TensorRT 8.6+, OpenVINO 2023+; the dynamo "
                   "exporter writes >= 18, torchscript 7..20)")
    p.add_argument("--fp16", action="store_true", default=None, help="fp16 weights and compute (GPU deployment); "
                   "input/outputs stay fp32 unless --fp16-io")
    p.add_argument("--fp16-io", action="store_true", default=None, help="with --fp16: fp16 input and outputs too")
    p.add_argument("--simplify", action="store_true", default=None, help="run onnxslim on the graph (pip install onnxslim)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], help="torch.onnx exporter (default dynamo)")
    p.add_argument("--target", choices=list(TARGETS), help="what the file is for, recorded as featx.target: any "
                   "(default), cpu (ONNX Runtime / OpenVINO on a CPU), cuda (ONNX Runtime's CUDA provider), tensorrt; "
                   "a GPU target never takes the CPU's Winograd timing")
    winograd = p.add_mutually_exclusive_group()
    winograd.add_argument("--winograd", choices=list(WINOGRAD_MODES), help="off (default): every 3x3 conv a Conv node; "
                          "auto: featx.accel times each 3x3 conv direct and as Winograd MatMuls in the file's runtime on "
                          "this CPU (at the --static input or else 512x512; cached per CPU; the decision goes into the "
                          "file's metadata) and converts those measured faster; all: every 128-256-channel one. fp32 "
                          "CPU files only")
    winograd.add_argument("--no-winograd", dest="winograd", action="store_const", const="off",
                          help="the same as --winograd off")
    p.add_argument("--int8", action="store_true", help="also quantize to int8, calibrated on --calib images: "
                   "<output>_int8.onnx (ONNX Runtime static QDQ) or <output>_int8.xml (OpenVINO, NNCF)")
    p.add_argument("--runtime", choices=list(INT8_RUNTIMES), default=None,
                   help="with --int8: the int8 runtime (default: the file's own, ONNX Runtime for .onnx and OpenVINO "
                   "for --format openvino); auto (featx.accel) builds both once, times them on this CPU and keeps the "
                   "faster (cached, recorded in the file), so the int8 file is <output>_int8.onnx or _int8.xml, "
                   "whichever runtime won (the command prints which)")
    p.add_argument("--max-drop", type=non_negative_float, default=None,
                   help="with --int8: NNCF's accuracy-aware quantization, layers back to fp32 until the mean cosine to "
                   "fp32 drops by at most this (OpenVINO)")
    p.add_argument("--overflow-fix", choices=list(OVERFLOW_FIXES), default="auto",
                   help="with --int8: 7-bit weights against u8 x s8 saturation on CPUs without VNNI (ONNX Runtime's "
                   "reduce_range, NNCF's overflow fix); auto (default) is this CPU's: enable without VNNI, disable with "
                   "it. Quantizing on a VNNI machine for AVX2-only ones: enable. first_layer_only: NNCF's alone")
    p.add_argument("--calib", metavar="FOLDER", help="with --int8: images to calibrate on (an ImageFolder or any "
                   "folder of images)")
    p.add_argument("--calib-count", type=int_at_least(1), default=32, help="with --int8: calibration images (default 32)")
    p.add_argument("--calib-size", type=hxw, default=(512, 512), help="with --int8: calibration input HxW "
                   "(default 512x512)")
    p.add_argument("--calib-method", choices=list(CALIBRATION_METHODS), default="percentile",
                   help="with --int8: activation range estimate (default percentile 99.99)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init when no weights are given (default 0)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from featx.deploy.request import default_export_path, export_settings, int8_plan
    from featx.models import target_config
    from featx.models.specs import random_weights_notice
    from featx.report import format_table

    settings = export_settings(args.profile, batch=args.batch, opset=args.opset, fp16=args.fp16, fp16_io=args.fp16_io,
                               simplify=args.simplify, exporter=args.exporter, target=args.target,
                               winograd=args.winograd, static_shape=args.static)
    int8 = int8_plan(settings, args.format, args.int8, args.calib, args.runtime, args.max_drop,
                     args.overflow_fix)  # refused now, not after the fp32 export
    cfg = target_config(args.model, args.cfg_options, args.weights)
    out = default_export_path(args.model, cfg, settings, args.format, args.output)
    notice = random_weights_notice(cfg, "the exported file")
    if notice:
        log(notice)
    if settings.winograd != "off":  # the opt-in CPU layer: the same exports with measured Winograd rewrites
        from featx.accel import export_onnx_tuned as export_onnx_file, export_openvino_tuned as export_openvino_file
    else:
        from featx.deploy.onnx_export import export_onnx as export_onnx_file
        from featx.deploy.openvino_export import export_openvino as export_openvino_file
    if args.device != "cpu" and args.format != "aoti":
        raise ValueError("--device chooses what an AOTInductor package is compiled for; add --format aoti")
    if args.format in ("pt2", "aoti"):
        from featx.deploy.pt2_export import export_pt2

        r = export_pt2(cfg, out, settings, seed=args.seed, log=log, aoti=args.format == "aoti", device=args.device)
        print(f"wrote {r.path}  ({r.size_mb:.1f} MB, {r.exporter}, {r.seconds:.1f} s)")
        rows = [["input", v["name"], v["dtype"], " x ".join(map(str, v["shape"]))] for v in r.inputs]
        rows += [["output", v["name"], v["dtype"], " x ".join(map(str, v["shape"]))] for v in r.outputs]
    elif args.format == "openvino":
        r = export_openvino_file(cfg, out, settings, seed=args.seed, log=log)
        print(f"wrote {r.path} + {Path(r.bin_path).name}  ({r.size_mb:.1f} MB, OpenVINO IR, {r.seconds:.1f} s)")
        rows = [["input", v["name"], v["dtype"], v["shape"]] for v in r.inputs]
        rows += [["output", v["name"], v["dtype"], v["shape"]] for v in r.outputs]
    else:
        r = export_onnx_file(cfg, out, settings, seed=args.seed, log=log)
        print(f"wrote {r.path}  ({r.size_mb:.1f} MB, opset {r.opset}, {r.exporter} exporter, {r.seconds:.1f} s)")
        rows = [["input", v["name"], v["dtype"], " x ".join(map(str, v["shape"]))] for v in r.inputs]
        rows += [["output", v["name"], v["dtype"], " x ".join(map(str, v["shape"]))] for v in r.outputs]
    print(f"weights: {r.metadata['featx.weights']}  precision: {r.metadata['featx.precision']} "
          f"(io {r.metadata['featx.io_precision']})  target: {r.metadata['featx.target']}  "
          f"Winograd convs: {r.metadata.get('featx.winograd_convs', 0)}")
    print(format_table(["", "name", "dtype", "shape"], rows))
    if int8 is not None:
        options = dict(calib_size=tuple(args.calib_size), count=args.calib_count, method=args.calib_method,
                       max_drop=args.max_drop, seed=args.seed, overflow_fix=args.overflow_fix, log=log)
        if int8.measured:
            from featx.accel import export_int8_measured

            q = export_int8_measured(cfg, out, settings, args.calib, **options)
        else:
            from featx.deploy.int8 import export_int8

            q = export_int8(cfg, out, settings, args.calib, runtime=int8.runtime, **options)
        print(f"wrote {q.path}  ({q.size_mb:.1f} MB, int8 for {q.runtime}, calibrated on {q.images} images at "
              f"{q.calib_size[0]}x{q.calib_size[1]}, {q.seconds:.1f} s); check it with: featx parity {q.path}")
    return 0


def _add_parity(sub) -> None:
    p = add_command(
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
    p.add_argument("onnx", metavar="FILE", help="an .onnx file, an OpenVINO .xml, or a .pt2 (torch.export program or "
                   "AOTInductor package) written by featx export")
    p.add_argument("--trust-code", action="store_true",
                   help="load a .pt2: an AOTInductor package is a compiled library and runs as native code when "
                        "loaded, a torch.export program is rebuilt by torch's deserializer; only for files you trust "
                        "(docs/trust.md)")
    p.add_argument("--model", help="compare with this model (catalogue name or config .py) instead of the one the "
                   "file's metadata names; random init with --seed unless --weights")
    p.add_argument("--weights", help="with --model: weights to load into it")
    p.add_argument("--seed", type=int, default=0, help="with --model: init seed (default 0)")
    p.add_argument("--device", default="auto", choices=DEVICE_KINDS,
                   help="auto: CUDA when onnxruntime-gpu and a GPU are present, else CPU; cuda fails loudly without")
    p.add_argument("--sizes", type=hxw, nargs="+", help="input sizes HxW (default 512x512 800x1216 801x1333 333x517)")
    p.add_argument("--batch", type=int_at_least(1), nargs="+", default=[1, 2],
                   help="batch sizes: every size at the first, the first size at the rest (default 1 2)")
    p.add_argument("--repeats", type=int_at_least(0), default=5, help="timed runs for the latency median (0 to skip; default 5)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (both sides); uses the TF32 gate")
    p.add_argument("--precision", choices=["fp32", "tf32", "fp16", "int8"],
                   help="judge by this precision's gate (default: the precision the file's graph computes in; the "
                        "file's metadata must agree with its graph and never picks the gate)")
    p.add_argument("--max-rel", type=non_negative_float, help="override the gate's max|err|/max|ref|")
    p.add_argument("--min-cos", type=cosine, help="override the gate's minimum cosine (-1..1)")
    p.add_argument("--threads", type=int_at_least(1), help="CPU threads for both runtimes")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="also write the report as JSON (atomically)")
    p.set_defaults(func=_cmd_parity)


def _cmd_parity(args) -> int:
    import torch

    from featx.deploy.metadata import read_metadata
    from featx.deploy.parity import parity
    from featx.io import write_json
    from featx.models import build_from_config, target_config
    from featx.report import format_table

    if args.weights and not args.model:
        raise ValueError("--weights goes with --model (the model to compare with)")
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = read_metadata(args.onnx)
    model = build_from_config(target_config(args.model, None, args.weights), args.seed) if args.model else None
    r = parity(args.onnx, model=model, device=args.device, sizes=args.sizes, batches=args.batch, repeats=args.repeats,
                   tf32=args.tf32, threads=args.threads, log=log, meta=meta, precision=args.precision,
                   max_rel=args.max_rel, min_cos=args.min_cos, trust_code=args.trust_code)
    print(f"{args.onnx}: {meta.get('model_config', {}).get('type', '?')}  precision {r.precision}  "
          f"runtime {r.runtime}")
    print(f"gate: max|err|/max|ref| <= {r.gate['max_rel']:g}, cosine >= {r.gate['min_cos']} ({r.gate['why']})\n")
    rows = [[x.output, f"{x.batch}x{x.size[0]}x{x.size[1]}", x.shape, f"{x.max_abs:.3g}", f"{x.rel:.3g}",
             f"{x.cosine:.7f}", "pass" if x.passed else "FAIL"] for x in r.results]
    print(format_table(["output", "input", "shape", "max abs err", "err/max|ref|", "cosine", "verdict"], rows))
    if r.latency_ms:
        lat = r.latency_ms
        print(f"\nlatency {'x'.join(map(str, lat['input']))}, median of {lat['repeats']} interleaved after warm-up, "
              f"inputs and outputs on {r.device} ({lat['io']}): {r.runtime.split()[0]} {lat['runtime']:.2f} ms, "
              f"PyTorch eager {lat['torch_precision']} {lat['torch_eager']:.2f} ms (runtime/PyTorch "
              f"{lat['runtime_over_torch']:.2f}x" + (f", {torch.get_num_threads()} torch threads)" if r.device == "cpu"
                                                     else ")"))
    for provider, ops in r.off_device.items():
        print(f"not on CUDA ({provider}): " + ", ".join(f"{op} x{n}" for op, n in ops.items()))
    failed = [f"{x.output}@{x.batch}x{x.size[0]}x{x.size[1]}" for x in r.results if not x.passed]
    print(f"\n{'PASS' if r.passed else 'FAIL'}: {len(r.results) - len(failed)} of {len(r.results)} outputs within the gate"
          + (f"; failing: {', '.join(failed[:10])}" if failed else ""))
    if args.json:
        write_json(args.json, r.to_dict())
    return 0 if r.passed else 1


def _add_int8_report(sub) -> None:
    p = add_command(
        sub, "int8-report", help="int8 accuracy on weights trained here: fp32 vs ONNX Runtime int8 vs OpenVINO int8",
        description="Quantize a model trained here with ONNX Runtime and with OpenVINO/NNCF (calibrated on training "
                    "images) and compare with fp32 PyTorch on the validation split: the task metric (a classifier's "
                    "top-1, a detector's COCO mAP@0.5 with the int8 pyramid inside the trained detector) and the "
                    "cosine to fp32 of every output level. Random weights say little about int8; these do.",
        epilog="examples:\n"
               "  featx int8-report --classifier work_dirs/resnet18_digits/best.pth "
               "--data data/digits\n"
               "  featx int8-report --detector work_dirs/shapes/detector.pth --data data/shapes --json int8.json\n",
    )
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--classifier", metavar="CHECKPOINT", help="a featx train checkpoint (ImageFolder at --data)")
    kind.add_argument("--detector", metavar="CHECKPOINT", help="a featx train-detector detector.pth (COCO at --data)")
    p.add_argument("--data", required=True, help="the dataset it was trained on (train/ calibrates, val/ evaluates)")
    p.add_argument("--calib-count", type=int_at_least(1), default=64, help="calibration images (default 64)")
    p.add_argument("--overflow-fix", choices=[f for f in OVERFLOW_FIXES if f != "first_layer_only"], default="auto",
                   help="7-bit weights in both runtimes (as in featx export --int8); auto (default) is this CPU's: "
                   "enable without VNNI, disable with it. With enable the u8 x s8 sums cannot saturate, so a VNNI machine "
                   "computes the integer sums an AVX2-only CPU would")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="also write the report as JSON")
    p.set_defaults(func=_cmd_int8_report)


def _cmd_int8_report(args) -> int:
    from featx.int8_report import evaluate_classifier_int8, evaluate_detector_int8
    from featx.report import format_table

    checkpoint = args.classifier or args.detector
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if not (Path(args.data) / "val").is_dir():
        raise FileNotFoundError(f"{args.data} has no val/ folder to evaluate on")
    evaluate = evaluate_classifier_int8 if args.classifier else evaluate_detector_int8
    r = evaluate(checkpoint, args.data, args.calib_count, overflow_fix=args.overflow_fix, log=log)
    levels = list(r.rows[0]["cosine"])
    print(f"{r.task} {checkpoint} | CPU: {r.cpu} | int8 overflow fix: {r.overflow_fix}")
    print(format_table(["runtime", r.metric] + [f"cosine {lv}" for lv in levels],
                       [[row["runtime"], f"{row['metric']:.4g}"] + [f"{row['cosine'][lv]:.5f}" for lv in levels]
                        for row in r.rows]))
    if args.json:
        r.save(args.json)
    return 0


# each adds one sub-command to the parser (featx.cli.build_parser)
COMMANDS = (_add_export, _add_parity, _add_int8_report)
