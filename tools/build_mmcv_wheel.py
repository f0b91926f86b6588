#!/usr/bin/env python3
"""Build mmcv 2.1.0 (with its compiled CPU ops) into a wheel cache, once; later runs reuse the wheel.

Why: mmdet 3.3.0 needs mmcv >= 2.0, < 2.2 with compiled ops, and PyPI has no mmcv wheel for the torch
featx is tested with (2.14). mmcv 2.1.0's sdist builds against it unchanged except for one thing:
torch's headers need C++20 and mmcv's setup.py asks for C++14/17. This script

1. downloads the sdist from the package index and checks its SHA-256,
2. raises the C++ standard in setup.py's compile flags to C++20 (no other change),
3. builds a wheel with ``pip wheel --no-build-isolation`` against the torch already installed
   (setuptools < 70 on PYTHONPATH for the build only: mmcv's setup.py imports pkg_resources),

and leaves ``mmcv-2.1.0-*.whl`` in the cache folder (``$FEATX_WHEEL_CACHE``, default
``~/.cache/featx/wheels``). The wheel is specific to the torch version it was built against, so
its file name is tagged with it and a different torch builds anew.

On a machine with CUDA, install mmcv from OpenMMLab's wheel index instead (see docs/clients.md: mmdet).

    python tools/build_mmcv_wheel.py            # prints the wheel's path
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

VERSION = "2.1.0"
SDIST_SHA256 = "d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f"  # PyPI's published hash


def cache_dir() -> Path:
    root = os.environ.get("FEATX_WHEEL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featx" / "wheels"
    return Path(root)


def torch_tag() -> str:
    import torch

    return "torch" + torch.__version__.split("+")[0].replace(".", "")


def cached_wheel(folder: Path, tag: str) -> Path | None:
    found = sorted(folder.glob(f"mmcv-{VERSION}+{tag}-*.whl"))
    return found[-1] if found else None


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def main() -> int:
    folder = cache_dir()
    tag = torch_tag()
    wheel = cached_wheel(folder, tag)
    if wheel is not None:
        print(wheel)
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="featx-mmcv-") as tmp:
        tmp = Path(tmp)
        tools = tmp / "buildtools"
        # setuptools < 70 still ships pkg_resources, which mmcv's setup.py imports
        run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(tools), "setuptools>=64,<70", "wheel"])
        env = dict(os.environ, PYTHONPATH=str(tools) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary=:all:", "--no-build-isolation",
             "-d", str(tmp), f"mmcv=={VERSION}"], env=env)
        sdist = tmp / f"mmcv-{VERSION}.tar.gz"
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise SystemExit(f"mmcv sdist hash mismatch: {digest} != {SDIST_SHA256}; refusing to build it")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = tmp / f"mmcv-{VERSION}"
        setup = src / "setup.py"
        text = setup.read_text()
        patched = re.sub(r"-std=c\+\+1[47]'", "-std=c++20'", text)
        if patched.count("-std=c++20'") < 3:
            raise SystemExit("mmcv's setup.py no longer looks as expected (C++ standard flags not found)")
        # a local version label records the torch the ops were compiled against
        patched = patched.replace("version=get_version()", f"version=get_version() + '+{tag}'")
        if f"+{tag}" not in patched:
            raise SystemExit("mmcv's setup.py no longer looks as expected (version=get_version() not found)")
        setup.write_text(patched)
        jobs = str(max(1, min(len(os.sched_getaffinity(0)), 8)))
        build_env = dict(env, MMCV_WITH_OPS="1", FORCE_CUDA="0", MAX_JOBS=jobs)
        print(f"compiling mmcv {VERSION} CPU ops with {jobs} jobs (about 15-20 minutes on 2 cores) ...", flush=True)
        out = tmp / "wheelhouse"
        run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out), str(src)], env=build_env)
        built = next(out.glob("mmcv-*.whl"))
        # atomic: a killed build never leaves a half-written wheel under the cached name
        part = folder / (built.name + ".part")
        shutil.copyfile(built, part)
        os.replace(part, folder / built.name)
    wheel = cached_wheel(folder, tag)
    print(f"built in {(time.time() - start) / 60:.1f} min", file=sys.stderr)
    print(wheel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
