#!/usr/bin/env python3
"""Fetch timm's own model tests (``tests/test_models.py`` from timm's source distribution) into a cache, once.

featx runs timm's test file on its ``featx_*`` models (``tests/test_timm_own_suite.py``, with the plugin in
``tests/plugins/timm_featx.py``). The file is timm's, for the timm version featx pins
(``requirements/constraints.txt``): it is downloaded from the package index by pip, its SHA-256 checked,
and kept in ``$FEATX_TIMM_TESTS`` (default ``~/.cache/featx/timm-tests/timm-<version>/``), never
copied into this repository.

    python tools/fetch_timm_tests.py      # prints the path of test_models.py
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# PyPI's timm sdists that featx's pins allow, by version: SHA-256 of the .tar.gz
SDIST_SHA256 = {"1.0.31": "baa0b333339c46d3d6d4965d99b69f5053afed71210e8f433d7ea5ee6a18f0ec"}
MEMBERS = ("tests/test_models.py", "tests/conftest.py", "tests/__init__.py")


def timm_version() -> str:
    from importlib.metadata import version

    return version("timm")


def cache_dir(version: str) -> Path:
    root = os.environ.get("FEATX_TIMM_TESTS") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featx" / "timm-tests"
    return Path(root) / f"timm-{version}"


def fetch(version: str | None = None) -> Path:
    """The cached ``test_models.py`` of timm ``version`` (the installed one by default); downloads it if missing."""
    version = version or timm_version()
    folder = cache_dir(version)
    target = folder / "tests" / "test_models.py"
    if target.is_file():
        return target
    if version not in SDIST_SHA256:
        raise SystemExit(f"timm {version} is installed; featx knows the sdist hash of timm {', '.join(SDIST_SHA256)} only "
                         "(add its SHA-256 from PyPI to tools/fetch_timm_tests.py)")
    with tempfile.TemporaryDirectory(prefix="featx-timm-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"timm=={version}", "--no-binary", ":all:", "--no-deps",
               "--disable-pip-version-check", "--quiet", "-d", tmp]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        sdist = Path(tmp) / f"timm-{version}.tar.gz"
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256[version]:
            raise SystemExit(f"{sdist.name}: SHA-256 {digest}, expected {SDIST_SHA256[version]}; not using it")
        with tarfile.open(sdist) as tar:
            for member in MEMBERS:
                info = tar.getmember(f"timm-{version}/{member}")
                data = tar.extractfile(info).read()
                out = folder / member
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp_out = out.with_suffix(".part")
                tmp_out.write_bytes(data)
                tmp_out.replace(out)
    return target


def main() -> int:
    print(fetch())
    return 0


if __name__ == "__main__":
    sys.exit(main())
