"""Every command and code block of README.md and docs/ runs as written, in order, in a fresh folder.

A fenced block says whether it runs by its info string: ```` ```bash run ```` / ```` ```python run ```` run here;
any other block names why it does not (``setup``: what ``make`` itself does; ``needs-gpu``; ``cluster``: Slurm or
Ray clusters; ``your-data``: a dataset only the reader has; ``config``: a file's content, run by the tests of its
own; ``output``: what a command printed). In a ``run`` block a line whose comment carries ``[internet]``,
``[gpu]``, ``[slow]`` (minutes: the slow tests run the same commands) or ``[your data]`` is shown, not run.

Weights: torchvision's files are placed in the torch hub cache under their own names (random values in their
exact format, accepted as the published files for these tests only), so ``weights="DEFAULT"`` loads through the
code path a user with internet takes.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import place_in_hub_cache

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md"] + sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))
WHY_NOT = {"setup", "slow", "needs-gpu", "cluster", "your-data", "config", "output"}
LINE_SKIPS = ("[internet]", "[gpu]", "[slow]", "[your data]", "[other tool]")
LANGUAGES = {"bash", "python"}


@dataclass
class Block:
    doc: str
    line: int
    language: str
    tags: list[str]
    text: str

    @property
    def runs(self) -> bool:
        return "run" in self.tags


def blocks(doc: str) -> list[Block]:
    found, inside = [], None
    for number, line in enumerate((REPO / doc).read_text().splitlines(), 1):
        if line.startswith("```"):
            if inside is None:
                words = line[3:].split()
                inside = Block(doc, number, words[0] if words else "", words[1:], "")
            else:
                found.append(inside)
                inside = None
        elif inside is not None:
            inside.text += line + "\n"
    return found


def _runnable_lines(block: Block) -> tuple[list[str], list[str]]:
    """The block's lines to run and the ones it shows only (by their markers); backslash continuations joined."""
    joined, run, shown = "", [], []
    for line in block.text.splitlines():
        joined += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        text, joined = joined, ""
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        (shown if any(m in text for m in LINE_SKIPS) else run).append(text)
    return run, shown


def test_every_code_block_says_whether_it_runs():
    unmarked = [f"{b.doc}:{b.line}" for d in DOCS for b in blocks(d)
                if b.language in LANGUAGES and not (b.runs or set(b.tags) & WHY_NOT)]
    assert not unmarked, f"blocks without `run` or a reason ({', '.join(sorted(WHY_NOT))}): {unmarked}"
    assert sum(b.runs for d in DOCS for b in blocks(d)) >= 15


@pytest.fixture
def weights_offline(tmp_path, monkeypatch):
    """torchvision's ResNet-50 file in the torch hub cache, as a user with internet would have it."""
    from torchvision.models import ResNet50_Weights, resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    place_in_hub_cache(resnet50().state_dict(), ResNet50_Weights.DEFAULT.url, monkeypatch)


def _bash(line: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_run_as_written(doc, tmp_path, monkeypatch, weights_offline):
    """The doc's `run` blocks, in order, in one fresh folder: bash lines as the featx of this environment
    runs them, Python blocks in one namespace (in this process, so the placed weights are found)."""
    runnable = [b for b in blocks(doc) if b.runs]
    if not runnable:
        pytest.skip(f"{doc} has no runnable blocks")
    if doc == "docs/weights.md":  # its detector block: torchvision's Faster R-CNN v2 COCO file
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights, fasterrcnn_resnet50_fpn_v2

        state = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()
        place_in_hub_cache(state, FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url, monkeypatch)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TORCH_HOME": str(tmp_path / "torch_home")}
    namespace: dict = {"__name__": "__docs__"}
    for block in runnable:
        if block.language == "bash":
            for line in _runnable_lines(block)[0]:
                r = _bash(line, work, env)
                assert r.returncode == 0, f"{doc}:{block.line}: `{line}` exited {r.returncode}:\n{r.stderr[-3000:]}"
        else:
            code = "\n".join(line for line in block.text.splitlines() if not any(m in line for m in LINE_SKIPS))
            try:
                exec(compile(code, f"{doc}:{block.line}", "exec"), namespace)
            except Exception as e:  # the block and its line in the message
                raise AssertionError(f"{doc}:{block.line}: {type(e).__name__}: {e}") from e
