"""Benchmark reports as result files: ``<hardware>-<versions>.json`` plus the same rows as a markdown table
(``.md``), in a folder such as ``benchmarks/results/``, and an index of every result there (``README.md``).

The file name says where the numbers come from (CPU model and ISA level, thread count, model; the
torch / ONNX Runtime / OpenVINO versions), so results from different machines sit side by side and
none is overwritten by another machine's.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Union

from featx.io import atomic_path, write_json
from featx.report import TIME_RATIO_NOTE, markdown_table

__all__ = ["result_name", "timing_table", "save_results", "write_index"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def result_name(report: dict[str, Any]) -> str:
    """``cpu-amd-epyc-avx512-vnni-2t-resnet50fpn-torch-2.14.1-onnxruntime-1.32.0-...``: hardware, then versions."""
    cpu = report["cpu"]
    flags = set(cpu.get("flags") or ())
    level = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else cpu.get("arch", "cpu")
    level += "-vnni" if cpu.get("vnni") else ""
    level += "-amx" if cpu.get("amx") else ""
    hardware = f"{report.get('device', 'cpu')}-{cpu['model']}-{level}-{report['threads']}t-{report['model']}"
    winograd = "" if report.get("winograd", "off") == "off" else f"-winograd-{report['winograd']}"
    return _slug(f"{hardware}{winograd}-{report['versions']}")


def timing_table(report: dict[str, Any], memory: bool = False) -> tuple[list[str], list[list[str]]]:
    """The table of a :func:`featx.bench.cpu.run_benchmark` report, as ``featx bench`` prints it and its result
    files hold it: ``(headers, rows)``, one row per entry and input (a failed entry says why); a column of ratios to
    OpenVINO on the direct export when that entry ran, and peak RSS with ``memory``."""
    rows = report["rows"]
    vs_ov = any("vs_openvino_direct" in r for r in rows)
    headers = (["entry", "input", "median ms", "p25-p75 ms", "img/s", "time vs torchvision"]
               + (["time vs OV direct"] if vs_ov else []) + ["GFLOPs", "GFLOP/s", "of peak"]
               + (["peak RSS MB"] if memory else []))
    table = []
    for r in rows:
        shape = "x".join(map(str, r.get("input", []))) or "-"
        if "error" in r:
            table.append([r["entry"], shape, "failed: " + r["error"][:60]] + [""] * (len(headers) - 3))
            continue
        table.append([r["entry"], shape, f"{r['median_ms']:.1f}", f"{r['p25_ms']:.1f}-{r['p75_ms']:.1f}",
                      f"{r['images_per_s']:.2f}", f"{r['vs_torchvision']:.2f}x" if r.get("vs_torchvision") else "-"]
                     + ([f"{r['vs_openvino_direct']:.2f}x" if "vs_openvino_direct" in r else "-"] if vs_ov else [])
                     + [f"{r['gflops']:.1f}", f"{r['achieved_gflops_s']:.1f}", f"{100 * r['of_peak']:.0f}%"]
                     + ([str(r.get("peak_rss_mb"))] if memory else []))
    return headers, table


def save_results(report: dict[str, Any], folder: Union[str, Path]) -> tuple[Path, Path]:
    """Write ``report`` (:func:`featx.bench.cpu.run_benchmark`'s) as ``<name>.json`` and ``<name>.md`` in ``folder``
    and refresh the folder's index; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = result_name(report)
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    write_json(json_path, report)
    headers, rows = timing_table(report, memory=any("peak_rss_mb" in r for r in report["rows"]))
    cpu = report["cpu"]
    text = (f"# {report['model']} on {cpu['model']}\n\n"
            f"CPU: {cpu['model']} ({cpu['isa']}), {report['threads']} threads; {report['versions']}; "
            f"Winograd (featx.accel): {report.get('winograd', 'off')}; fp32 matmul peak "
            f"{report['matmul_peak_gflops']:.1f} GFLOP/s measured in the same run. Medians of interleaved rounds; "
            "ratios are per-round against torchvision's `resnet_fpn_backbone`.\n\n"
            + markdown_table(headers, rows) + "\n\n" + TIME_RATIO_NOTE + ".\n")
    with atomic_path(md_path) as tmp:
        tmp.write_text(text)
    write_index(folder)
    return json_path, md_path


def write_index(folder: Union[str, Path]) -> Path:
    """``README.md`` in ``folder``: one line per result file (model, CPU, threads, versions, entries)."""
    folder = Path(folder)
    lines = ["# Benchmark results", "", "Written by `featx bench --results DIR`; one file per machine and software "
             "versions (the `.json` keeps every timed run).", ""]
    rows = []
    for path in sorted(folder.glob("*.json")):
        try:
            r = json.loads(path.read_text())
            rows.append([f"[{path.stem}]({path.stem}.md)", r["model"], r["cpu"]["model"], r["cpu"]["isa"],
                         str(r["threads"]), r["versions"], str(r.get("winograd", "off"))])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    lines.append(markdown_table(["result", "model", "CPU", "ISA", "threads", "versions", "Winograd"], rows))
    index = folder / "README.md"
    with atomic_path(index) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return index
