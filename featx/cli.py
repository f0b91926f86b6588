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
        help="compare a featx model with the torchvision reference on the same checkpoint",
        description="Build a featx model and its torchvision reference, load the same checkpoint into both "
                    "(each through its own loading code), run random inputs at several sizes and compare every "
                    "level: pass when max|featx - ref| <= tol * max|ref|. Exit code 0 only when all pass.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  featx check-weights ResNet50 --weights IMAGENET1K_V2      # torchvision hub cache\n"
               "  featx check-weights fasterrcnn_resnet50_fpn_v2 --weights COCO_V1\n"
               "  featx check-weights ResNet50FPN --weights my.pth --reference-weights original.pth\n"
               "  featx check-weights --all --json report.json               # every model, random weights\n",
    )
    p.add_argument("model", nargs="?", help="catalogue name (featx list) or torchvision detector name")
    p.add_argument("--weights", default="random",
                   help="'random' (default: a random torchvision checkpoint, offline), an enum name "
                        "(DEFAULT, IMAGENET1K_V1, COCO_V1 for detectors), a file or a URL")
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


# -- list / demo --------------------------------------------------------------------------------
def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list the registered models",
                       description="Every featx model with its mmengine type and timm name.",
                       epilog="example: featx list '*FPN' --json")
    p.add_argument("pattern", nargs="?", help="shell pattern, e.g. 'ResNet50*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args) -> int:
    from featx.models import CATALOG, list_models
    from featx.report import format_table

    names = list_models(args.pattern)
    rows = [[n, CATALOG[n].timm_name, CATALOG[n].kind, CATALOG[n].arch] for n in names]
    if args.json:
        print(json.dumps([dict(zip(["name", "timm_name", "kind", "arch"], r)) for r in rows], indent=2))
    else:
        print(format_table(["model (featx.<name>)", "timm name", "kind", "arch"], rows))
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run a model on the bundled photo and print its pyramid",
                       epilog="example: featx demo --model ResNet18FPN")
    p.add_argument("--model", default="ResNet50FPN")
    p.add_argument("--image", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=lambda a: __import__("featx.demo", fromlist=["main"]).main(
        ["--model", a.model] + (["--image", a.image] if a.image else []) + (["--threads", str(a.threads)] if a.threads else [])))


_SUBCOMMANDS: list[Callable] = [_add_list, _add_demo, _add_check_weights]


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
