"""The images of a source: a folder (recursive), a .txt/.csv list of paths, or a glob pattern."""
from __future__ import annotations

import csv
import glob
import io
import os
from pathlib import Path
from typing import Union


from featx.images import IMAGE_EXTENSIONS
from featx.io import regular_file


def list_images(source: Union[str, Path]) -> list[tuple[str, Path]]:
    """``(id, file)`` pairs, sorted by id: a folder's images (recursive, ids relative to it), a .txt/.csv
    list (first column; relative paths from the list's folder; ids as written), or a glob pattern."""
    return list_source(source)[0]


def list_source(source: Union[str, Path]) -> tuple[list[tuple[str, Path]], int, list[dict]]:
    """:func:`list_images`, how many files of a source folder were ignored as not images (by extension;
    hidden files not counted), and the source's subfolders that could not be read (as skip records: their images
    are not in the store, and the manifest and the summary say so)."""
    text = str(source)
    path = Path(text)
    ignored = 0
    unreadable: list[Path] = []
    if path.is_dir():
        files, unreadable = _walk_files(path)
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored = sum(1 for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS and not p.name.startswith("."))
        pairs = [(p.relative_to(path).as_posix(), p) for p in images]
    elif path.is_file() and path.suffix.lower() in (".txt", ".csv"):
        pairs = []
        text = regular_file(path, "image list", MAX_LIST_BYTES).read_text(encoding="utf-8", errors="surrogateescape")
        lines = ([row[0] if row else "" for row in csv.reader(io.StringIO(text))] if path.suffix.lower() == ".csv"
                 else text.splitlines())  # a CSV's first column as the csv module reads it (quoted commas included)
        for line in lines:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            file = Path(item) if Path(item).is_absolute() else path.parent / item
            if path.suffix.lower() == ".csv" and not pairs and not file.exists() and "." not in Path(item).suffix:
                continue  # a header row
            pairs.append((item, file))
    else:
        check_source(source)
        pairs = [(m, Path(m)) for m in glob.glob(text, recursive=True) if Path(m).is_file()]
    pairs = sorted(dict(pairs).items())
    folders = [{"path": printable_id(u.relative_to(path).as_posix() + "/"),
                "reason": "this folder cannot be read (permissions): none of its images are included"} for u in unreadable]
    if not pairs:
        raise ValueError(f"no images in {source} (extensions: {', '.join(IMAGE_EXTENSIONS)})"
                         + (f"; {len(folders)} of its folders cannot be read" if folders else ""))
    return pairs, ignored, folders


def check_source(source: Union[str, Path]) -> None:
    """Refuse a source :func:`list_images` cannot read, without listing it (commands call it before loading
    weights): not found, or neither a folder, a .txt/.csv list, nor a glob pattern."""
    text = str(source)
    path = Path(text)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in (".txt", ".csv")) or any(c in text for c in "*?["):
        return
    if path.exists():
        raise ValueError(f"{source} is neither a folder, a .txt/.csv list of paths, nor a glob pattern")
    raise FileNotFoundError(f"source not found: {source}")


MAX_LIST_BYTES = 1 << 30  # an image list of at most 1 GiB (~10 million paths)


def _walk_files(root: Path) -> tuple[list[Path], list[Path]]:
    """Every regular file under ``root`` (links followed as ``Path.is_file`` does) and the folders that could not
    be read (``Path.rglob`` skips those without a word)."""
    files: list[Path] = []
    unreadable: list[Path] = []
    for folder, _, names in os.walk(root, onerror=lambda e: unreadable.append(Path(e.filename))):
        for name in names:
            p = Path(folder) / name
            if p.is_file():
                files.append(p)
    return files, unreadable


def source_root(source: Union[str, Path]) -> Path:
    """The folder the ids of :func:`list_images` are relative to: the source folder, a list's folder, or the
    current folder for a glob (absolute ids stay absolute)."""
    path = Path(source)
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        return path.resolve().parent
    return Path.cwd().resolve()


def printable_id(image_id: str) -> str:
    """An id as text that can be stored (a file name that is not UTF-8 keeps its other characters)."""
    return image_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
