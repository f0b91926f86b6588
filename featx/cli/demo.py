"""``featx demo`` and ``featx finetune-demo``: the library end to end on data that ships with its dependencies."""
from __future__ import annotations

from featx.cli.common import CfgOptions, add_command, int_at_least, log
from featx.options import DIGITS_CONFIG

__all__ = ["COMMANDS"]


def _add_demo(sub) -> None:
    p = add_command(sub, "demo", help="run a model on the bundled photo, draw its maps, export to ONNX, check parity",
                description="The demo: a featx pyramid on matplotlib's sample photo with torchvision's detection "
                            "preprocessing; its levels, a feature-map picture, an ONNX export and ONNX Runtime parity. "
                            "Uses torchvision's weights when they are cached, a seeded random init otherwise.",
                epilog="examples:\n  featx demo\n  featx demo --model ResNet18FPN --no-export")
    p.add_argument("--model", default="ResNet50FPN", help="catalogue name (default ResNet50FPN)")
    p.add_argument("--image", default=None, help="image file (default: matplotlib's sample photo)")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export and parity steps")
    p.add_argument("--export-dir", default="export", help="where the .onnx and .png go (default export/)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    import torch

    from featx.demo import run_demo
    from featx.models import get_entry

    if args.threads:
        torch.set_num_threads(args.threads)
    return run_demo(get_entry(args.model).name, args.image, not args.no_export, args.export_dir, out=print, log=log)


def _add_finetune_demo(sub) -> None:
    p = add_command(
        sub, "finetune-demo", help="digits end to end: make the ImageFolder, train ResNet-18, predict, export to ONNX",
        description="The fine-tuning demo: writes scikit-learn's digits as an ImageFolder (if missing), trains "
                    f"{DIGITS_CONFIG} (ResNet-18 from scratch, 12 epochs; measured times on 2-core CPUs: docs/training.md), predicts a few "
                    "validation images with the best checkpoint, exports it to ONNX and checks ONNX Runtime parity.",
        epilog="examples:\n  featx finetune-demo\n  featx finetune-demo --cfg-options train_cfg.max_epochs=3   # a quick look\n",
    )
    p.add_argument("--work-dir", default="work_dirs/finetune_demo", help="default work_dirs/finetune_demo")
    p.add_argument("--data-root", default="data/digits", help="where the digits ImageFolder is (or goes)")
    p.add_argument("--config", default=DIGITS_CONFIG, help=f"default {DIGITS_CONFIG}")
    p.add_argument("--cfg-options", nargs="+", action=CfgOptions, default=None, help="passed to featx train")
    p.set_defaults(func=_cmd_finetune_demo)


def _cmd_finetune_demo(args) -> int:
    from featx.demo import run_finetune_demo

    return run_finetune_demo(args.work_dir, args.data_root, args.config, args.cfg_options, out=print, log=log)


# each adds one sub-command to the parser (featx.cli.build_parser)
COMMANDS = (_add_demo, _add_finetune_demo)
