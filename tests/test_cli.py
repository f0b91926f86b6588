"""The `featx` command end to end, in subprocesses, and the README model table."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _subcommands() -> list[str]:
    """Every sub-command the parser has (so a new one cannot miss these tests)."""
    import argparse

    from featx.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


SUBCOMMANDS = _subcommands()


def test_every_command_is_documented():
    """Each sub-command the parser has is shown in use (``featx <command>``) in the README or a guide in docs/."""
    text = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    undocumented = [c for c in SUBCOMMANDS if not re.search(rf"featx {re.escape(c)}\b", text)]
    assert SUBCOMMANDS and not undocumented, undocumented


def featx(*args):
    return run_cli(*args)


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("featx")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for sub in SUBCOMMANDS:
        assert sub in r.stdout


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_has_help_with_example(sub):
    r = featx(sub, "--help")
    assert r.returncode == 0 and "example" in r.stdout.lower()
    assert "%%" not in r.stdout  # raw descriptions are not %-formatted: a doubled % shows as typed


def test_list_table_and_json():
    r = featx("list", "ResNet18*")
    assert r.returncode == 0
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[2:]}
    assert set(rows) == {"ResNet18", "ResNet18FPN", "ResNet18RetinaFPN"}
    # name, timm name, family, levels, strides, channels, params, GFLOPs 224, GFLOPs 800x1216, weights
    assert rows["ResNet18"][1:9] == ["featx_resnet18", "resnet", "C2-C5", "4/8/16/32", "64/128/256/512", "11.2", "3.6",
                                     "70.3"]
    assert rows["ResNet18FPN"][3:6] == ["P2-P6", "4/8/16/32/64", "256"]
    j = featx("list", "ResNet18*", "--json")
    data = {d["name"]: d for d in json.loads(j.stdout)}
    assert data["ResNet18"]["params_m"] == 11.18 and data["ResNet18"]["weights"] == ["IMAGENET1K_V1"]
    assert data["ResNet18RetinaFPN"]["strides"] == [8, 16, 32, 64, 128]


def test_info_pyramid_and_config():
    r = featx("info", "featx_resnet50_fpn", "--size", "801x1333")
    assert r.returncode == 0
    assert re.search(r"P2\s+4\s+256\s+1x256x201x334", r.stdout) and re.search(r"P6\s+64\s+256\s+1x256x13x21", r.stdout)
    assert 'model = dict(backbone=dict(_delete_=True, type="featx.ResNet50FPN"' in r.stdout
    # composites are not timm models; their backbone's C2..C5 are timm's indices 1..4 (the stem's level is 0)
    assert "timm.create_model('featx_resnet50', features_only=True, out_indices=(1, 2, 3, 4))" in r.stdout
    assert "timm.create_model('featx_resnet18')" in featx("info", "resnet18", "--size", "64x64").stdout
    j = json.loads(featx("info", "ResNet18", "--size", "64x64", "--json").stdout)
    assert [lv["shape"] for lv in j["levels"]] == [[1, 64, 16, 16], [1, 128, 8, 8], [1, 256, 4, 4], [1, 512, 2, 2]]


def test_viz_writes_png_with_a_panel_per_level(tmp_path):
    out = tmp_path / "maps.png"
    r = featx("viz", "sample", "--model", "ResNet18RetinaFPN", "--size", "128", "-o", str(out), "--method", "pca")
    assert r.returncode == 0, r.stderr
    assert "6 panels: input + 5 levels" in r.stdout
    with Image.open(out) as im:
        assert im.size == (1200, 800)  # 3 x 2 panels of 400 px


def test_viz_reduce_map():
    import torch

    from featx.viz import reduce_map

    f = torch.zeros(8, 4, 5)
    f[:, 1, 2] = 3.0
    m = reduce_map(f, "mean")
    assert m.shape == (4, 5) and m[1, 2] == 1.0 and m.sum() == 1.0
    p = reduce_map(torch.randn(16, 6, 7), "pca")
    assert p.shape == (6, 7) and p.min() == 0 and p.max() == 1
    with pytest.raises(ValueError, match="one feature map"):
        reduce_map(torch.zeros(1, 2, 3, 4))


@pytest.mark.parametrize("args,words", [
    (["info", "ResNet51FPN"], "unknown featx model 'ResNet51FPN' (did you mean ResNet50FPN"),
    (["viz", "/nonexistent.jpg", "--model", "ResNet18"], "image not found: /nonexistent.jpg"),
    (["list", "nomodel*"], "no model matches"),
])
def test_errors_are_one_line(args, words):
    r = featx(*args)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert words in lines[0] and lines[1].strip() == "(run with --debug for the full traceback)"
    assert "Traceback" not in r.stderr
    d = subprocess.run([sys.executable, "-m", "featx", "--debug", *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=300) if args[0] == "info" else None
    assert d is None or "Traceback" in d.stderr


def test_a_value_out_of_range_is_refused_with_the_range():
    """featx's argument types say what they accept (argparse only says the value is invalid)."""
    r = featx("extract", "ResNet18", "photos/", "--out", "f/", "--batch", "0")
    assert r.returncode == 2 and "--batch: expected an integer >= 1, got 0" in r.stderr
    r = featx("extract", "ResNet18", "photos/", "--out", "f/", "--size", "20000")
    assert r.returncode == 2 and "--size: expected an integer in 8..16384, got 20000" in r.stderr


@pytest.mark.slow
def test_the_catalogue_table_in_the_docs_is_current():
    r = featx("list", "--markdown")
    assert r.returncode == 0
    doc = (ROOT / "docs" / "models.md").read_text()
    current = doc.split("<!-- featx-list:start -->\n")[1].split("\n<!-- featx-list:end -->")[0]
    assert current.strip() == r.stdout.strip(), "docs/models.md's table is stale: paste `featx list --markdown`"


def test_the_readmes_family_table_lists_every_backbone_of_the_catalogue():
    """Each family's backbones are named in one row of README's table, with where its weights come from; a family
    added to the catalogue without its row fails here."""
    from featx.models import CATALOG
    from featx.models.catalog import FAMILIES

    readme = (ROOT / "README.md").read_text()
    table = readme.split("| family | models | weights from |\n|---|---|---|\n")[1].split("\n\n")[0]
    rows = [line.strip("|").split("|") for line in table.splitlines()]
    named = [(set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", models)), source) for _, models, source in rows]
    for family in FAMILIES:
        backbones = {n for n, e in CATALOG.items() if e.family is family and e.kind == "backbone"}
        where = [source for names, source in named if backbones <= names]
        assert len(where) == 1, f"README's family table has no row naming {sorted(backbones)}"
        assert ("trained here" if family.source == "featx" else family.source) in where[0], (family.name, where[0])


def test_the_readme_is_a_front_door_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300 and "make demo" in readme and "make test" in readme
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    for doc in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


def test_a_composites_figures_do_not_depend_on_its_backbone_being_listed_first(monkeypatch):
    """The backbone's cost is measured once per architecture, from the backbone built for its own row or built for
    the composite's: the same figures either way."""
    import featx.stats as stats

    monkeypatch.setattr(stats, "_BACKBONE_COSTS", {})
    _, alone, _ = stats.model_table("ResNet18FPN", use_cache=False)
    monkeypatch.setattr(stats, "_BACKBONE_COSTS", {})
    _, together, _ = stats.model_table("ResNet18*", use_cache=False)
    assert [r[0] for r in together] == ["ResNet18", "ResNet18FPN", "ResNet18RetinaFPN"]
    assert alone == [together[1]]


def test_list_reads_its_figures_from_the_cache_after_the_first_call(tmp_path, monkeypatch):
    import featx.stats as stats

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path / "cache"))  # a folder that does not exist yet
    headers, rows, first = stats.model_table("ResNet18*")
    assert [r[0] for r in rows] == ["ResNet18", "ResNet18FPN", "ResNet18RetinaFPN"]
    assert (tmp_path / "cache" / "catalogue.json").is_file()
    monkeypatch.setattr(stats, "model_stats", lambda name: pytest.fail(f"{name} measured again"))
    assert stats.model_table("ResNet18*")[1] == rows  # the same table, from the cache
    # another key (other model code or library versions): measured again
    monkeypatch.setattr(stats, "_catalogue_key", lambda: "another")
    with pytest.raises(pytest.fail.Exception, match="measured again"):
        stats.model_table("ResNet18*")


def test_list_progress_is_written_only_to_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    r = featx("list", "ResNet*")  # stderr is a StringIO here, not a terminal
    assert r.returncode == 0 and "\r" not in r.stderr and "measuring" not in r.stderr


def test_dependency_diagnostics_stay_off_the_console_unless_verbose():
    """torch's shape solver logs a traceback per inequality it cannot simplify during an export that succeeds;
    featx's commands keep those loggers to errors, --verbose and --debug let them through."""
    code = ("import logging, sys; from featx.cli import main; main(sys.argv[1:]); "
            "logging.getLogger('torch.fx.experimental.symbolic_shapes').warning('Failed to reduce inequalities'); "
            "logging.getLogger('torch.fx.experimental.symbolic_shapes').error('a real error')")
    quiet = subprocess.run([sys.executable, "-c", code, "list", "--json"], capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-c", code, "list", "--json", "--verbose"], capture_output=True, text=True)
    assert "Failed to reduce" not in quiet.stderr and "a real error" in quiet.stderr
    assert "Failed to reduce" in loud.stderr


def test_heartbeat_shows_a_long_step_is_alive():
    import time

    from featx.timing import heartbeat

    lines: list[str] = []
    with heartbeat(lines.append, "exporting", every=0.05):
        time.sleep(0.3)
    count = len(lines)
    time.sleep(0.15)
    assert count >= 2 and len(lines) == count  # it stops with the block
    assert re.fullmatch(r"  \.\.\. still exporting \(\d+ s\)", lines[0])


@pytest.mark.slow
def test_an_export_that_succeeds_prints_a_few_lines(tmp_path):
    """DenseNet121FPN: ~200 lines of torch.fx tracebacks before; now featx's lines and a heartbeat."""
    r = run_cli("export", "DenseNet121FPN", "-o", str(tmp_path / "d.onnx"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "symbolic_shapes" not in r.stderr and len(r.stderr.splitlines()) <= 8, r.stderr
    assert "exporting featx.DenseNet121FPN" in r.stderr


def test_sample_photos_fills_a_folder_once(tmp_path):
    first = run_cli("sample-photos", str(tmp_path / "photos"))
    again = run_cli("sample-photos", str(tmp_path / "photos"))
    assert first.returncode == 0 and "3 pictures copied, 0 already there" in first.stdout
    assert again.returncode == 0 and "0 pictures copied, 3 already there" in again.stdout
    names = sorted(p.name for p in (tmp_path / "photos").iterdir())
    assert names == ["Minduka_Present_Blue_Pack.png", "grace_hopper.jpg", "logo2.png"]
    with Image.open(tmp_path / "photos" / "grace_hopper.jpg") as im:
        assert im.size == (512, 600)
    (tmp_path / "file").write_text("x")
    refused = run_cli("sample-photos", str(tmp_path / "file"))
    assert refused.returncode == 1 and "exists and is not a folder" in refused.stderr


def test_extract_names_a_missing_source_before_fetching_weights(tmp_path, monkeypatch):
    """Offline, --weights DEFAULT fails too; the missing folder is what is named, before any weights work."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    r = run_cli("extract", "ResNet50", str(tmp_path / "nop"), "--out", str(tmp_path / "f"), "--weights", "DEFAULT")
    assert r.returncode == 1 and f"source not found: {tmp_path / 'nop'}" in r.stderr and "Weights" not in r.stderr


def test_bench_refuses_entries_of_the_other_device_before_timing_anything():
    """The entry rules live in featx.bench (cpu_entries, gpu_entries); the command reports them as one line."""
    from featx.bench.cpu import cpu_entries
    from featx.bench.gpu import gpu_entries
    from featx.options import BENCH_ENTRIES, GPU_BENCH_ENTRIES

    assert cpu_entries(None) == list(BENCH_ENTRIES[:6]) and cpu_entries(["featx_ort"]) == ["featx_ort"]
    gpu_only = sorted(set(GPU_BENCH_ENTRIES) - set(BENCH_ENTRIES))
    cpu_only = sorted(set(BENCH_ENTRIES) - set(GPU_BENCH_ENTRIES))
    with pytest.raises(ValueError, match=f"{gpu_only[0]}: not CPU entries; use --device cuda"):
        cpu_entries([gpu_only[0]])
    with pytest.raises(ValueError, match=f"{cpu_only[0]}: not GPU entries; drop --device cuda"):
        gpu_entries(["featx", cpu_only[0]])
    with pytest.raises(ValueError, match="--precision is for --device cuda"):
        cpu_entries(None, ["fp16"])
    r = featx("bench", "--model", "ResNet18FPN", "--entries", gpu_only[0])
    assert r.returncode == 1 and f"{gpu_only[0]}: not CPU entries" in r.stderr and "Traceback" not in r.stderr
