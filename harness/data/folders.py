"""Class-folder trees: `DIR/train/<class>/*` + `DIR/test/<class>/*` (what ImageFolder reads), or one
tree `DIR/<class>/*` without splits (the test split is then drawn by data/__init__.py).

Decoding is the slow part, so each (split, class) is decoded once, by a bounded thread pool with a
progress bar, and cached as .npy under HARNESS_CACHE_DIR, keyed by the folder's file list (names,
sizes, modification times) and the target size and channels.
"""
from __future__ import annotations

import errno
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from harness.data.images import SUFFIXES, decode
from harness.errors import HarnessError

PROGRESS_FROM = 2000  # files: below this a decode takes about a second, no bar needed


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "harness"))


def check_cache_dir() -> None:
    """Before any work: the cache folder (decoded images, downloads) must be a folder we can write."""
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        what = "is a file, not a folder" if path.exists() and not path.is_dir() else f"is not writable ({e.strerror})"
        raise HarnessError(f"the harness cache {path} {what}; set HARNESS_CACHE_DIR to a writable folder") from None


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


class ClassFolders:
    """`root/<split>/<class>/*` when `split` is set (train and test), else `root/<class>/*` (split "all")."""

    def __init__(self, root: Path, size: int, channels: int, split: bool):
        self.root, self.size, self.channels = root, size, channels
        self.has_test = split
        self.classes = tuple(_subdirs(root / "train" if split else root))
        kind = "class folders with train/ and test/" if split else "one class-folder tree without splits"
        self.source = f"{kind} at {root}"
        self.uri = root.resolve().as_uri()

    def folder(self, split: str, name: str) -> Path:
        return self.root / split / name if self.has_test else self.root / name

    def images(self, split: str, name: str) -> np.ndarray:
        folder = self.folder(split, name)
        if not folder.is_dir():
            raise HarnessError(f"{folder} is missing: the {split} split has no folder for class {name!r}")
        return decode_folder(folder, self.size, self.channels, f"decoding {split}/{name}")


def image_entries(folder: Path, what: str = "class folder") -> list[os.DirEntry]:
    """A folder's images, sorted by name; anything else in it is refused. Read with one scandir: every
    command lists the folders to find its cached decode, and pathlib's per-file stat and sorting took
    ~0.6 s of a cached run for CIFAR-10's 18,000 files of three classes."""
    with os.scandir(folder) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    for e in entries:
        _stat(e)  # a link to nowhere, or to itself, is named here, not as a traceback below
    strays = sorted(e.name for e in entries if e.is_dir() or os.path.splitext(e.name)[1].lower() not in SUFFIXES)
    if strays:
        raise HarnessError(f"{folder / strays[0]} is not an image (expected {', '.join(SUFFIXES)}); "
                           f"move it out of the {what} ({len(strays)} such entries)")
    if not entries:
        raise HarnessError(f"{what} {folder} has no images ({', '.join(SUFFIXES)})")
    entries.sort(key=lambda e: e.name)
    return entries


def decode_folder(folder: Path, size: int, channels: int, label: str, what: str = "class folder") -> np.ndarray:
    """Every image of a folder -> uint8 [N, size, size, channels], decoded once and cached as .npy,
    keyed by the folder's file list (names, sizes, modification times), the size and the channels."""
    entries = image_entries(folder, what)
    listing = "\n".join(f"{e.name}:{(st := e.stat()).st_size}:{st.st_mtime_ns}" for e in entries)  # cached by image_entries
    key = hashlib.sha256(f"{folder.resolve()}|{size}|{channels}|{listing}".encode()).hexdigest()[:16]
    cached = cache_dir() / "decoded" / f"{folder.name}-{key}.npy"
    if cached.is_file():
        return np.load(cached)
    out = np.stack(_decode_all([Path(e.path) for e in entries], size, channels, label))
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp, out)
        os.replace(tmp, cached)  # atomic, so a concurrent reader never sees half a file
    except OSError as e:
        tmp.unlink(missing_ok=True)  # a partial file would keep a full disk full
        # numpy reports a short write as "N requested and M written", with no errno: a full disk too.
        full = e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space" in str(e) or "requested and" in str(e)
        why = "no space left on the device" if full else (e.strerror or str(e) or type(e).__name__)
        raise HarnessError(f"cannot write the decoded-image cache {cached.parent} ({why}); free some space or set "
                           "HARNESS_CACHE_DIR to a writable folder") from None
    return out


def _stat(entry: os.DirEntry) -> os.stat_result:
    try:
        return entry.stat()
    except OSError as e:  # a link to nowhere, or to itself
        raise HarnessError(f"{entry.path} cannot be read ({e.strerror}): a broken or looping link? fix or remove "
                           "it") from None


def _decode_all(files: list[Path], size: int, channels: int, label: str) -> list[np.ndarray]:
    # Threads, bounded: Pillow releases the GIL while it decodes, and more threads than cores only
    # add memory.
    workers = min(8, os.cpu_count() or 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: decode(p, size, channels), files, chunksize=64)
        if len(files) < PROGRESS_FROM:
            return list(results)
        from harness import progress
        with progress.bar(len(files), label, iterable=results, unit="images") as bar:
            return list(bar)


def layout(root: Path) -> str | None:
    """"split" (train/ and test/), "tree" (class folders only) or None; a mix is refused."""
    dirs = _subdirs(root)
    if not dirs:
        return None
    if "train" in dirs and "test" in dirs:
        others = [d for d in dirs if d not in ("train", "test")]
        if others:
            raise HarnessError(f"data dir {root} mixes layouts: train/ and test/ beside other folders "
                               f"({', '.join(others[:5])}); keep either train/<class>/ + test/<class>/ or "
                               "<class>/ folders only")
        return "split"
    if "train" in dirs or "test" in dirs:
        missing = "test" if "train" in dirs else "train"
        raise HarnessError(f"data dir {root} has {'train' if missing == 'test' else 'test'}/ but no {missing}/; "
                           "give both, or one folder per class without splits")
    return "tree"
