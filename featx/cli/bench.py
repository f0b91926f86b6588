"""``featx bench`` and ``featx bench-extract``: featx timed against its peers in one run."""
from __future__ import annotations

from featx.cli.common import add_command, hxw, int_at_least, log, writable_file
from featx.options import BENCH_ENTRIES as ENTRIES
from featx.options import GPU_BENCH_ENTRIES, PRECISIONS, WINOGRAD_MODES

__all__ = ["COMMANDS"]


def _add_bench(sub) -> None:
    p = add_command(
        sub, "bench", help="time featx against torchvision / timm / ONNX Runtime in one run",
        description="Time each entry on the same random input with the same thread count: median and 25-75% "
                    "spread after warm-up, images/s, ratio to torchvision's resnet_fpn_backbone in this run, GFLOPs "
                    "(torch.utils.flop_counter) and achieved GFLOP/s against the measured fp32 matmul peak. With "
                    "--winograd auto the optimized and exported entries take featx.accel's Winograd convolutions (and "
                    "the _direct entries stay plain, to show what that adds); GFLOPs are the direct convolutions' for "
                    "every entry, so a Winograd entry shows an effective rate that can pass the peak. "
                    f"Entries: {', '.join(ENTRIES)} (featx_compile, featx_aoti and the int8 entries only when named). The report "
                    "names the CPU (model, AVX2/AVX-512/VNNI/AMX) and the runtime versions.\n\n"
                    "With --device cuda: featx's GPU paths on one CUDA device at each --precision (fp32, tf32, fp16, "
                    "bf16), timed by CUDA events: "
                    f"{', '.join(GPU_BENCH_ENTRIES)} (default: torchvision featx featx_optimized featx_cuda_graph featx_tuned "
                    "featx_ort; featx_ort binds inputs and outputs on the GPU); each row's ratio to torchvision eager "
                    "at the same precision, TFLOP/s and the share of a matmul peak measured in the run, and the GPU, "
                    "driver, CUDA and cuDNN versions.",
        epilog="examples:\n"
               "  featx bench --threads 2 --json bench.json --png bench.png\n"
               "  featx bench --model ResNet18FPN --sizes 512x512 --batch 1 --entries torchvision featx featx_optimized\n"
               "  featx bench --winograd auto --entries torchvision featx_openvino featx_openvino_direct   # featx.accel\n"
               "  featx bench --device cuda --sizes 800x1216 --batch 1 8 --precision fp16 bf16 --json gpu.json\n",
    )
    p.add_argument("--model", default="ResNet50FPN", help="featx composite (default ResNet50FPN)")
    p.add_argument("--sizes", type=hxw, nargs="+", default=[(512, 512), (800, 1216)], help="HxW (default 512x512 800x1216)")
    p.add_argument("--batch", type=int_at_least(1), nargs="+", default=[1, 4], help="batch sizes: every size at the first, the first size at the rest (default: 1 4)")
    p.add_argument("--entries", nargs="+", default=None, choices=sorted(set(ENTRIES) | set(GPU_BENCH_ENTRIES)),
                   help="what to time (default on the CPU: the first six CPU entries; with --device cuda: see above)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N: the GPU benchmark")
    p.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=None,
                   help="with --device cuda: the precisions to time (default fp32 tf32 fp16 bf16)")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch/ORT threads (default: torch's)")
    p.add_argument("--repeats", type=int_at_least(1), default=5, help="timed runs per entry and input (default 5)")
    p.add_argument("--warmup", type=int_at_least(0), default=1, help="untimed runs first (default 1)")
    p.add_argument("--memory", action="store_true", help="also measure peak RSS in a fresh process per entry")
    p.add_argument("--winograd", choices=list(WINOGRAD_MODES), default="off",
                   help="Winograd convolutions in the optimized and exported entries (featx.accel): off (default), "
                   "auto (those measured faster in each entry's runtime on this CPU), all (every 128-256-channel 3x3)")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--png", metavar="PATH", type=writable_file, help="write a bar chart of latency relative to torchvision")
    p.add_argument("--results", metavar="DIR", help="also write the report as result files named by hardware and "
                   "versions (<cpu>-<isa>-<threads>-<model>-<versions>.json and .md) in DIR, e.g. benchmarks/results, "
                   "and refresh DIR's index")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    import torch

    from featx.bench.cpu import bench_chart, cpu_entries, run_benchmark
    from featx.bench.results import timing_table
    from featx.devices import checked_device
    from featx.io import write_json
    from featx.models import get_entry
    from featx.report import TIME_RATIO_NOTE, format_table, markdown_table

    if args.threads:
        torch.set_num_threads(args.threads)
    get_entry(args.model)  # an unknown name fails now, not after the matmul peak
    if checked_device(args.device).type == "cuda":
        return _bench_gpu(args)
    args.entries = cpu_entries(args.entries, args.precision)
    r = run_benchmark(args.model, args.sizes, args.batch, args.entries, args.warmup, args.repeats, args.memory,
                      log=log, winograd=args.winograd)
    headers, rows = timing_table(r, memory=args.memory)
    print(f"{r['model']} ({r['params_m']} M params) | {r['threads']} threads | fp32 matmul peak "
          f"{r['matmul_peak_gflops']:.1f} GFLOP/s | Winograd {r['winograd']}")
    print(f"CPU: {r['cpu']['model']} ({r['cpu']['isa']}) | {r['versions']}")
    print(markdown_table(headers, rows) if args.markdown else format_table(headers, rows))
    print(TIME_RATIO_NOTE)
    for best in r["fastest_fp32_vs_openvino_direct"]:
        print(f"featx's fastest fp32 path at {'x'.join(map(str, best['input']))}: {best['entry']}, "
              f"{best['ratio']:.2f}x of OpenVINO on the direct export (median of per-round ratios)")
    if args.json:
        write_json(args.json, r)
    if args.results:
        from featx.bench.results import save_results

        json_path, md_path = save_results(r, args.results)
        print(f"results: {json_path}, {md_path}")
    if args.png:
        bench_chart(r, args.png)
        print(f"chart: {args.png}")
    return 0


def _bench_gpu(args) -> int:
    from featx.bench.gpu import gpu_entries, run_gpu_benchmark
    from featx.io import write_json
    from featx.report import TIME_RATIO_NOTE, format_table, markdown_table

    entries = gpu_entries(args.entries)
    for option in ("winograd", "memory", "results", "png"):
        if getattr(args, option) not in (None, False, "off"):
            raise ValueError(f"--{option} is for the CPU benchmark; drop it with --device cuda")
    r = run_gpu_benchmark(args.model, args.sizes, args.batch, entries, args.precision or list(PRECISIONS),
                          max(args.warmup, 1), args.repeats, args.device, log=log)
    headers = ["entry", "precision", "input", "median ms", "p25-p75 ms", "img/s", "time vs torchvision", "TFLOP/s", "of peak"]
    rows = []
    for x in r["rows"]:
        if "error" in x:
            rows.append([x["entry"], x["precision"], "x".join(map(str, x.get("input", []))) or "-",
                         "failed: " + x["error"][:70]] + [""] * (len(headers) - 4))
            continue
        rows.append([x["entry"], x["precision"], "x".join(map(str, x["input"])), f"{x['median_ms']:.2f}",
                     f"{x['p25_ms']:.2f}-{x['p75_ms']:.2f}", f"{x['images_per_s']:.0f}",
                     f"{x['vs_torchvision']:.2f}x" if x["vs_torchvision"] else "-", f"{x['tflops_s']:.1f}",
                     f"{100 * x['of_peak']:.0f}%" if x["of_peak"] is not None else "-"])
    gpu = r["gpu"]
    print(f"{r['model']} | {gpu['name']} ({gpu.get('memory_gib')} GiB, sm {gpu.get('capability')}) | driver {gpu['driver']}, "
          f"CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']} | {r['versions']}")
    print("matmul peak: " + ", ".join(f"{p} {v:.0f} TFLOP/s" for p, v in r["matmul_peak_tflops"].items()))
    print(markdown_table(headers, rows) if args.markdown else format_table(headers, rows))
    print(TIME_RATIO_NOTE)
    for best in r["best"]:
        ratio = f", {best['vs_torchvision']:.2f}x torchvision eager" if best["vs_torchvision"] else ""
        print(f"featx's fastest at {best['precision']} {'x'.join(map(str, best['input']))}: {best['entry']} "
              f"{best['median_ms']:.2f} ms{ratio}")
    if args.json:
        write_json(args.json, r)
    return 0


def _add_bench_extract(sub) -> None:
    p = add_command(
        sub, "bench-extract", help="benchmark featx extract against the model alone, and the store's reads",
        description="In one run: featx extract end to end (workers decode, the model runs, vectors are pooled and "
                    "written) against the same model on the same batches decoded beforehand and against the plain "
                    "PyTorch loop a user would write (PIL, torchvision transforms, a DataLoader), for scikit-learn's "
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
    p.add_argument("--digits", type=int_at_least(1), default=512, help="digits images (default 512 of 1797)")
    p.add_argument("--jpegs", type=int_at_least(1), default=256, help="generated 640x480 JPEGs (default 256)")
    p.add_argument("--size", type=int_at_least(8, 16384), default=224, help="shorter side (default 224)")
    p.add_argument("--batch", type=int_at_least(1), default=32, help="images per batch (default 32)")
    p.add_argument("--workers", type=int_at_least(0), default=2, help="DataLoader workers (default 2)")
    p.add_argument("--threads", type=int_at_least(1), help="torch intra-op threads (default: torch's)")
    p.add_argument("--rounds", type=int_at_least(1), default=2, help="alternated runs of each side (default 2)")
    p.add_argument("--no-store", action="store_true", help="skip the 100k-entry store part")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where every side runs the model")
    p.add_argument("--precision", choices=("auto", "fp32", "tf32", "fp16", "bf16"), default="auto",
                   help="the model's compute, as featx extract --precision (default auto: fp16 on CUDA, fp32 on a CPU)")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="write the report as JSON")
    p.set_defaults(func=_cmd_bench_extract)


def _cmd_bench_extract(args) -> int:
    from featx.bench.extract import run_extract_benchmark
    from featx.models import get_entry

    get_entry(args.model)  # an unknown name fails now, not after the collections are generated
    run_extract_benchmark(args.model, jpegs=args.jpegs, digits=args.digits, size=args.size, batch=args.batch,
                          workers=args.workers, threads=args.threads, rounds=args.rounds, collections=args.collections,
                          store=not args.no_store, json_path=args.json, log=print, device=args.device,
                          precision=args.precision)
    return 0


# each adds one sub-command to the parser (featx.cli.build_parser)
COMMANDS = (_add_bench, _add_bench_extract)
