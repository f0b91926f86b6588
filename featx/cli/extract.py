"""``featx extract``: features of a whole image collection into a resumable, sharded store."""
from __future__ import annotations

from featx.cli.common import CfgOptions, add_command, hxw, int_at_least, log, positive_float, writable_file
from featx.options import DECODERS, EXTRACT_DEFAULTS, POOLS, PRECISIONS, RUNTIMES, STORE_DTYPES

__all__ = ["COMMANDS"]


def _add_extract(sub) -> None:
    p = add_command(
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
               "  featx extract --verify features/\n"
               "  featx extract --verify random-features/ --weights random\n")
    p.add_argument("model", nargs="?", help="catalogue name (featx list) or a config .py with `model = dict(...)`")
    p.add_argument("source", nargs="?", help="folder, .txt/.csv list of paths, or a quoted glob pattern")
    p.add_argument("--out", help="the store folder (created; an existing store with the same settings is resumed)")
    p.add_argument("--verify", metavar="STORE",
                   help="instead: recompute a sample of STORE's images and compare (nothing the store names is fetched: "
                        "its weights are used only if already on this machine; --weights overrides them, and a store of "
                        "random weights needs --weights random)")
    p.add_argument("--weights", help="weights to load (as featx weights=: name such as DEFAULT, file, URL); without it the "
                                     "network is randomly initialized (said on the console, recorded in the manifest)")
    p.add_argument("--cfg-options", nargs="+", action=CfgOptions, default=None,
                   help="override config keys, key=value (model keyword arguments for a catalogue name)")
    p.add_argument("--levels", nargs="+", help="levels to store, P3 P4 or P3,P4 (default: every output, e.g. C2 C3 C4 C5)")
    p.add_argument("--pool", choices=POOLS, default=EXTRACT_DEFAULTS["pool"], help="pooling per level (default %(default)s)")
    p.add_argument("--gem-p", type=positive_float, default=EXTRACT_DEFAULTS["gem_p"], help="GeM exponent, > 0 (default %(default)g)")
    p.add_argument("--maps", action="store_true", help="store the cropped maps instead of pooled vectors")
    p.add_argument("--dtype", choices=STORE_DTYPES, default=EXTRACT_DEFAULTS["dtype"], help="stored precision (default %(default)s)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int_at_least(8, 16384), default=EXTRACT_DEFAULTS["size"],
                      help="shorter side in pixels (default %(default)s)")
    size.add_argument("--resize", type=hxw, metavar="HxW", help="resize every image to HxW instead")
    p.add_argument("--batch", type=int_at_least(1), default=EXTRACT_DEFAULTS["batch_size"], help="images per batch (default %(default)s)")
    p.add_argument("--workers", type=int_at_least(0), default=EXTRACT_DEFAULTS["workers"], help="DataLoader workers (default %(default)s)")
    p.add_argument("--threads", type=int_at_least(1), help="threads of the runtime that runs the model (default: torch's count); give each torchrun process its share")
    p.add_argument("--shard-batches", type=int_at_least(1), default=EXTRACT_DEFAULTS["shard_batches"],
                   help="batches per shard file (default %(default)s); fewer lose less work to a kill, more make fewer files")
    p.add_argument("--runtime", choices=RUNTIMES, default=EXTRACT_DEFAULTS["runtime"],
                   help="where the model runs (default torch; the others export it first)")
    p.add_argument("--device", default=EXTRACT_DEFAULTS["device"], help="cpu, cuda or cuda:N (default %(default)s)")
    p.add_argument("--decode", choices=DECODERS, default=EXTRACT_DEFAULTS["decode"],
                   help="where JPEGs are decoded: cpu (the workers, libjpeg-turbo), cuda (batched with nvJPEG where the "
                        "model runs, then resized there; the workers only read and hash; other formats and JPEGs the GPU "
                        "cannot read fall back to the CPU), auto (default: cuda when the model runs on CUDA in PyTorch)")
    p.add_argument("--precision", choices=("auto",) + PRECISIONS, default=EXTRACT_DEFAULTS["precision"],
                   help="the model's compute (torch runtime): auto (default) is fp16 on CUDA (tensor cores; vectors are "
                        "stored in fp16 by default anyway) and fp32 on a CPU; bf16 on CPUs with AVX512-BF16 or AMX "
                        "(measure it: featx bench-extract --precision bf16); tf32 on CUDA. Recorded in the manifest, "
                        "part of what a resumed run must match, and --verify's tolerance follows it")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="also write the run's summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_extract, on_interrupt="rerun the same command to resume (finished shards are kept)")


def _cmd_extract(args) -> int:
    import torch

    from featx.extraction import ExtractSettings, check_source, extract, verify_store
    from featx.io import write_json
    from featx.models import target_config

    if args.verify:
        report = verify_store(args.verify, log=print, weights=args.weights)
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
                               runtime=args.runtime, device=args.device, shard_batches=args.shard_batches,
                               precision=args.precision, decode=args.decode)
    if args.model.endswith((".pth", ".pt")):
        raise ValueError("featx extract takes a backbone (catalogue name or config .py), not a training checkpoint")
    check_source(args.source)  # before the weights are fetched or read
    model = target_config(args.model, args.cfg_options, args.weights)
    result = extract(model, args.source, args.out, settings, progress=not args.no_progress, log=log)
    if args.json and result.rank == 0:
        write_json(args.json, result.summary)
    return 0


def _add_store_export(sub) -> None:
    p = add_command(
        sub, "store-export", help="a feature store as index tools read it: npy matrices + parquet ids (LAION's layout)",
        description="Write a merged pooled store's vectors and ids the way LAION-5B's embeddings were released and "
                    "autofaiss / clip-retrieval read them: OUT/<LEVEL>/img_emb/img_emb_<k>.npy (float32, the store's "
                    "rows in order) and OUT/metadata/metadata_<k>.parquet (row, path, height, width, sha256, store), "
                    "the k-th files holding the same images. Needs pyarrow (featx[index]). In Python: "
                    "featx.extraction.store_index.export_index_layout; FeatureStore.faiss_index(level) gives a faiss index.",
        epilog="examples:\n"
               "  featx store-export features/ --out features_index/\n"
               "  featx store-export features/ --out idx/ --levels C5 --rows-per-file 1000000\n"
               "  autofaiss build_index --embeddings idx/C5/img_emb --index_path knn.index   # then, with autofaiss\n")
    p.add_argument("store", help="a store written by featx extract (pooled, merged)")
    p.add_argument("--out", required=True, help="the folder to write (created)")
    p.add_argument("--levels", nargs="+", help="levels to write (default: every level of the store)")
    p.add_argument("--rows-per-file", type=int_at_least(1), default=1_000_000,
                   help="images per npy/parquet pair (default 1000000)")
    p.set_defaults(func=_cmd_store_export)


def _cmd_store_export(args) -> int:
    from featx.extraction.store_index import export_index_layout

    levels = [lv for item in args.levels for lv in item.split(",") if lv] if args.levels else None
    r = export_index_layout(args.store, args.out, levels, args.rows_per_file)
    print(f"wrote {r['images']} images, levels {', '.join(r['levels'])}, {len(r['files'])} files under {args.out}")
    return 0


def _add_sample_photos(sub) -> None:
    p = add_command(
        sub, "sample-photos", help="copy matplotlib's bundled photos into a folder, to try extract and viz on",
        description="Copy the three pictures matplotlib ships (grace_hopper.jpg, a 512x600 photo; "
                    "Minduka_Present_Blue_Pack.png and logo2.png, RGBA) into OUT, created if missing. Files already "
                    "there are kept.",
        epilog="examples:\n  featx sample-photos photos/\n  featx sample-photos photos/ && featx extract ResNet18 photos/ "
               "--out features/\n",
    )
    p.add_argument("out", help="the folder to copy them into")
    p.set_defaults(func=_cmd_sample_photos)


def _cmd_sample_photos(args) -> int:
    import shutil
    from pathlib import Path

    from featx.images import sample_image_paths

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    copied = 0
    for src in sample_image_paths():
        if not (out / src.name).exists():
            shutil.copyfile(src, out / src.name)
            copied += 1
    print(f"{out}: {copied} pictures copied, {len(sample_image_paths()) - copied} already there")
    return 0


# each adds one sub-command to the parser (featx.cli.build_parser)
COMMANDS = (_add_extract, _add_store_export, _add_sample_photos)
