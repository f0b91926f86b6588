"""``featx list``, ``info``, ``viz`` and ``check-weights``: the catalogue, one model's pyramid, its feature
maps, and equivalence with the reference library."""
from __future__ import annotations

import fnmatch
import json
import sys
import time
from pathlib import Path

from featx.cli.common import add_command, hxw, int_at_least, log, non_negative_float, writable_file

__all__ = ["COMMANDS"]


def _add_list(sub) -> None:
    p = add_command(sub, "list", help="list the registered models with their pyramids, size and cost",
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
    from featx.report import format_table, markdown_table
    from featx.stats import model_table

    live = sys.stderr.isatty()  # a progress line rewritten in place only on a terminal

    def progress(i: int, n: int, name: str) -> None:
        if n > 3 and live:
            print(f"\r  measuring {i}/{n} {name:<28}", end="", file=sys.stderr, flush=True)

    headers, rows, stats = model_table(args.pattern, progress)
    if len(rows) > 3 and live:
        print("\r" + " " * 50 + "\r", end="", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([st.to_dict() for st in stats], indent=2))
    else:
        print(markdown_table(headers, rows) if args.markdown else format_table(headers, rows))
    return 0


def _add_info(sub) -> None:
    p = add_command(sub, "info", help="pyramid table, mmdet config snippet and timm name of one model",
                epilog="examples:\n  featx info ResNet50FPN\n  featx info featx_resnet50 --size 801x1333 --json")
    p.add_argument("model", help="catalogue or timm name")
    p.add_argument("--size", type=hxw, default=(800, 1216), help="input HxW (default 800x1216)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)


def _timm_backbone_line(entry) -> str:
    """The timm call giving a composite's backbone levels: timm's indices count the stem's levels first."""
    import torch

    with torch.device("meta"):  # only the description is needed
        backbone = getattr(entry.construct(), "backbone", None)
    if backbone is None or not hasattr(backbone, "stem_infos"):
        return f"timm: featx_{entry.arch}"
    indices = tuple(len(backbone.stem_infos) + i for i in backbone.out_indices)
    return f"timm: its backbone levels are timm.create_model('featx_{entry.arch}', features_only=True, out_indices={indices})"


def _cmd_info(args) -> int:
    from featx.models import get_entry
    from featx.report import format_table
    from featx.stats import mmdet_config, model_stats, pyramid_table

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
    timm_line = f"timm: timm.create_model({timm_name!r})" if timm_name else _timm_backbone_line(entry)
    print(f"{entry.name}  ({entry.kind}, {entry.arch})  {timm_line}")
    print(f"params {st.params_m:.1f} M, {st.gflops[size]:.1f} GFLOPs at 1x3x{size}\n")
    print(format_table(["level", "stride", "channels", "output shape"], rows))
    print(f"\nweights: {', '.join(st.weights) or '-'}")
    print("\nmmdet config:\n" + snippet)
    return 0


def _add_viz(sub) -> None:
    p = add_command(sub, "viz", help="draw feature-activation heat maps of every level over an image",
                description="Run a model on an image and write a PNG: the input and, per level, a heat map (mean "
                            "|activation| or first principal component over channels) overlaid at the image's scale, "
                            "titled with level, stride and shape.",
                epilog="examples:\n  featx viz photo.jpg --model ResNet50FPN --weights DEFAULT -o maps.png\n"
                       "  featx viz sample --model ResNet18 --method pca")
    p.add_argument("image", help="image file ('sample' for matplotlib's bundled photo)")
    p.add_argument("--model", default="ResNet50FPN", help="catalogue name (default ResNet50FPN)")
    p.add_argument("--weights", help="weights for the model (featx weights=)")
    p.add_argument("--size", type=int_at_least(16, 4096), default=512,
                   help="shorter image side fed to the model, 16..4096 (default 512)")
    p.add_argument("--method", choices=["mean", "pca"], default="mean", help="channel reduction (default mean)")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda or cuda:N (default cpu)")
    p.add_argument("-o", "--output", type=writable_file, default="featx_viz.png",
                   help="PNG path, ending in .png (default featx_viz.png)")
    p.set_defaults(func=_cmd_viz)


def _cmd_viz(args) -> int:
    if Path(args.output).suffix.lower() != ".png":
        raise ValueError(f"featx viz writes PNG images; the output must end in .png, got {args.output}")
    if args.image != "sample" and Path(args.image).is_dir():
        raise ValueError(f"{args.image} is a folder; expected an image file")
    if args.image != "sample" and not Path(args.image).is_file():
        raise FileNotFoundError(f"image not found: {args.image}")
    from featx.devices import checked_device
    from featx.models.specs import random_weights_notice
    from featx.viz import render_feature_maps

    checked_device(args.device)
    if args.weights is None:
        log(random_weights_notice({"type": args.model}, "the picture"))
    w, h, panels = render_feature_maps(args.image, args.model, args.output, args.weights, args.size, args.method,
                                       args.device)
    print(f"wrote {args.output} ({w}x{h} px, {panels} panels: input + {panels - 1} levels)")
    return 0


def _add_check_weights(sub) -> None:
    p = add_command(
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
    p.add_argument("--sizes", type=hxw, nargs="+", default=None, help="input sizes HxW (default 224x224 333x517)")
    p.add_argument("--batch", type=int_at_least(1), default=2, help="batch size of each input (default 2)")
    p.add_argument("--tol", type=non_negative_float, default=1e-5, help="relative tolerance (default 1e-5, fp32)")
    p.add_argument("--all", action="store_true", help="check every model that has a reference")
    p.add_argument("--pattern", default=None, help="with --all: only names matching this shell pattern")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="also write the report as JSON (atomically)")
    p.set_defaults(func=_cmd_check_weights)


def _cmd_check_weights(args) -> int:
    from featx.check import DEFAULT_SIZES, check_weights, checkable_models
    from featx.io import write_json
    from featx.report import format_table

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
        log(f"{prefix}{name}: checking ...")
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


# each adds one sub-command to the parser (featx.cli.build_parser)
COMMANDS = (_add_list, _add_info, _add_viz, _add_check_weights)
