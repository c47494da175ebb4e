"""Folder-level atomic saves: a save is written into a unique hidden sibling folder and swapped into place.

Protocol, under the folder's lock (``fs.FolderLock``; a second writer fails with a named error):

1. *recover*: finish or undo what an interrupted save left beside the folder (see :func:`recover`);
2. *check*: a non-empty folder that secateur did not write is refused unless ``overwrite``; files of
   others are never deleted: they are carried into the new folder (hard links) and only files with
   the names secateur writes are replaced, and only with ``overwrite``;
3. *stage*: every file goes into ``.NAME.secateur-staging-TOKEN`` (the manifest last), synced;
4. *commit*: the staging folder and the folder are exchanged in one atomic step (``renameat2``); where
   the system cannot, the folder is renamed aside (``.NAME.secateur-old-TOKEN``) and the staging folder
   renamed into place, and a reader that finds no folder reads the one set aside;
5. *discard*: the previous save, now in the hidden sibling, is deleted.

A reader therefore sees the previous save or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelFileError, OutputExistsError
from . import fs

MANIFEST = "manifest.json"
STAGING, OLD = ".secateur-staging-", ".secateur-old-"


def _siblings(target: Path, kind: str) -> list[Path]:
    prefix = f".{target.name}{kind}"
    if not target.parent.is_dir():
        return []
    return sorted((p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()),
                  key=lambda p: p.stat().st_mtime_ns)


def owned_files(folder: Path) -> set[str] | None:
    """The files a secateur manifest in ``folder`` lists (itself included), or None if it has none."""
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes()[: 64 << 20])
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("secateur."):
        return None
    files = manifest.get("files")
    names = {n for n in files if isinstance(n, str) and fs.NAME.fullmatch(n)} if isinstance(files, dict) else set()
    return names | {MANIFEST}


def discard(folder: Path) -> None:
    """Delete a hidden staging or set-aside folder of ours: its files, then the folder. A sub-folder is never
    ours, so a folder holding one is left in place."""
    entries = list(folder.iterdir())
    if any(e.is_dir() and not e.is_symlink() for e in entries):
        return
    for entry in entries:
        fs.remove_file(entry)
    fs.remove_dir(folder)


def recover(target: Path) -> None:
    """Undo what an interrupted save left: if the folder is missing but a set-aside copy exists (a save
    stopped between its two renames), put that copy back; then delete stale staging and set-aside folders."""
    olds = _siblings(target, OLD)
    if not target.exists() and olds:
        fs.rename(olds.pop(), target)
    for stale in _siblings(target, STAGING) + olds:
        discard(stale)


def live(target: Path) -> Path:
    """The folder a reader should read: ``target``, or the copy a save set aside just before its last rename."""
    if target.exists():
        return target
    olds = [p for p in _siblings(target, OLD) if (p / MANIFEST).is_file()]
    return olds[-1] if olds else target


def check_target(target: Path, writes: set[str], overwrite: bool) -> list[str]:
    """Refuse to write where secateur would damage files it did not write; return the other files, which
    the new folder keeps."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputExistsError(f"{target} exists and is not a folder; choose another output path")
    if not target.exists():
        return []
    entries = {p.name: p for p in target.iterdir()}
    ours = owned_files(target)
    others = sorted(set(entries) - (ours or set()))
    folders = [n for n in others if entries[n].is_dir() or not fs.NAME.fullmatch(n)]
    if folders:
        raise OutputExistsError(f"{target} holds {folders[0]!r}, which secateur did not write and cannot carry "
                                "over; move it elsewhere or choose another output folder")
    clash = sorted(set(others) & writes)
    if others and (ours is None or clash) and not overwrite:
        shown = ", ".join((clash or others)[:5])
        raise OutputExistsError(f"{target} holds files secateur did not write ({shown}); choose an empty or new "
                                "folder, or pass overwrite=True (--overwrite): secateur then replaces only files "
                                "with the names it writes and keeps the others")
    return [n for n in others if n not in writes]


def write_folder(target: str | os.PathLike, writes: set[str], stage: Callable[[Path], None],
                 overwrite: bool = False) -> Path:
    """Write a folder atomically: ``stage(folder)`` writes the files named in ``writes`` into a fresh
    staging folder (its manifest last); the result replaces ``target`` in one step."""
    target = Path(os.path.abspath(target))
    with fs.writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        return _write_locked(target, writes, stage, overwrite)


def _write_locked(target: Path, writes: set[str], stage: Callable[[Path], None], overwrite: bool) -> Path:
    with fs.FolderLock(target):
        recover(target)
        carried = check_target(target, writes, overwrite)
        staging = target.with_name(f".{target.name}{STAGING}{os.getpid()}-{secrets.token_hex(4)}")
        fs.make_dir(staging)
        try:
            stage(staging)
            for name in carried:
                fs.link(target / name, staging / name)
            fs.sync_dir(staging)
            _commit(staging, target)
        except BaseException:
            if staging.exists():
                _quietly(discard, staging)
            raise
    return target


def _commit(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}{OLD}{secrets.token_hex(4)}")
    if not target.exists():
        fs.rename(staging, target)
    elif fs.exchange(staging, target):
        fs.rename(staging, old)
    else:
        fs.rename(target, old)
        fs.rename(staging, target)
    fs.sync_dir(target.parent)
    if old.exists():
        discard(old)


def _quietly(fn: Callable, *args: object) -> None:
    try:
        fn(*args)
    except Exception:  # cleanup after a failure must not hide the failure; recover() finishes it later
        pass


def remove_saved(folder: Path) -> None:
    """Delete a folder secateur saved: only the files its manifest lists, then the folder if it is empty."""
    ours = owned_files(folder)
    if ours is None:
        return
    for name in sorted(ours, key=lambda n: n == MANIFEST):  # the manifest last: until then it is still a save
        fs.remove_file(folder / name)
    if not any(folder.iterdir()):
        fs.remove_dir(folder)


class Snapshot:
    """A consistent view of a saved folder for reading: the folder is opened once, and every file is opened
    relative to it (never through a symbolic link), so a save committed meanwhile cannot mix in."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = live(Path(folder))
        try:
            self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except (FileNotFoundError, NotADirectoryError):
            raise ModelFileError(f"{folder} holds no saved model (no such folder); write one with "
                                 "secateur.save(model, folder)") from None

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def replaced(self) -> bool:
        """Whether a save was committed into the folder since it was opened (a reader then reads it again)."""
        try:
            return os.stat(self.path).st_ino != os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return True

    def read(self, name: str, limit: int) -> bytes:
        """The bytes of file ``name`` (a plain name), at most ``limit`` of them, or a named error."""
        fs.check_name(name, str(self.path))
        try:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0), dir_fd=self.fd)
        except FileNotFoundError:
            if name == MANIFEST:
                raise ModelFileError(f"{self.path} holds no saved model (no {MANIFEST}); write one with "
                                     "secateur.save(model, folder)") from None
            raise ModelFileError(f"{self.path / name} is missing; the folder was not fully written or was "
                                 "changed by hand") from None
        except OSError as err:
            raise ModelFileError(f"{self.path / name} cannot be read ({err.strerror}); secateur reads regular "
                                 "files inside the folder, never links") from None
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise ModelFileError(f"{self.path / name} is {size:,} bytes, more than the {limit:,} expected; "
                                     "the folder is damaged or from another save")
            return handle.read(size)
