"""Where the configs featx ships are: a checkout's ``configs/``, or an installed wheel's data files."""
from __future__ import annotations

import sysconfig
from pathlib import Path

__all__ = ["config_path", "shipped_config"]


def shipped_config(relative: str) -> Path:
    """A config featx ships (``"configs/finetune/resnet18_digits.py"``): the path as given when it exists
    from here, else the repository's copy beside the package (a checkout), else the installed copy
    (``<prefix>/share/featx/configs/...``, from the wheel's data files)."""
    path = Path(relative)
    if path.is_file():
        return path
    candidates = [Path(__file__).resolve().parents[1] / relative,
                  Path(sysconfig.get_path("data")) / "share" / "featx" / relative]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"config not found: {relative} (looked here and in {', '.join(str(c.parent) for c in candidates)})")


def config_path(name: str) -> Path:
    """The config file a user names: ``configs/...`` as :func:`shipped_config` finds it (so the commands of the
    docs run from any folder), any other path as given; ``FileNotFoundError`` when it is not a file."""
    path = shipped_config(name) if name.startswith("configs/") else Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {name}")
    return path
