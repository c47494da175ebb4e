"""A run's output folder (``secateur run``, ``demo``, ``sensitivity``): every file a run writes is named
through it, so nothing lands outside the folder.

A folder that holds files secateur did not write is refused unless ``overwrite``. While a run writes,
the folder is locked (a second run into it fails at once) and holds ``INCOMPLETE``; ``secateur-run.json``
records every file the run writes as it goes, so the next run into the folder deletes exactly those
(and nothing else) before it starts, and an interrupted run never leaves an earlier report claiming
success beside new files.
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import nullcontext
from pathlib import Path

from ..errors import OutputExistsError
from . import fs
from .folder import remove_saved

RECORD, MARK = "secateur-run.json", "INCOMPLETE"
NOTE = ("secateur is writing this folder; this file goes when the run ends. If no run is active, the run was "
        "interrupted and the files here are incomplete.\n")


class OutputFolder:
    """The output folder of one run, used as a context manager.

    >>> import tempfile
    >>> with OutputFolder(Path(tempfile.mkdtemp()) / "run") as out:
    ...     _ = out.write_text("report.md", "# done")
    ...     sorted(p.name for p in out.root.iterdir())
    ['INCOMPLETE', 'report.md', 'secateur-run.json']
    >>> sorted(p.name for p in out.root.iterdir())
    ['report.md', 'secateur-run.json']
    """

    def __init__(self, root: str | os.PathLike, overwrite: bool = False) -> None:
        self.root = Path(os.path.abspath(root))
        self.overwrite = overwrite
        self.files: list[str] = []
        self._lock = fs.FolderLock(self.root)

    def __enter__(self) -> OutputFolder:
        if self.root.exists() and (self.root.is_symlink() or not self.root.is_dir()):
            raise OutputExistsError(f"{self.root} exists and is not a folder; choose another output folder")
        with fs.writing(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock.__enter__()
        try:
            self._clear_previous()
            if not (self.root / MARK).exists():
                fs.write_file(self.root / MARK, NOTE.encode())
            self._record("running")
        except BaseException:
            self._lock.__exit__()
            raise
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        try:
            self._record("complete" if exc_type is None else "failed")
            if exc_type is None:
                fs.remove_file(self.root / MARK)
        finally:
            self._lock.__exit__()

    def _previous(self) -> list[str] | None:
        try:
            record = json.loads((self.root / RECORD).read_text(encoding="utf-8"))
            files = record["files"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None
        return [f for f in files if isinstance(f, str) and _inside(f)] if isinstance(files, list) else None

    def _clear_previous(self) -> None:
        """Delete what the previous run into this folder recorded; refuse a folder secateur did not write."""
        previous = self._previous()
        others = sorted(p.name for p in self.root.iterdir() if p.name not in (RECORD, MARK))
        if others and previous is None and not self.overwrite:
            raise OutputExistsError(f"{self.root} holds files secateur did not write ({', '.join(others[:5])}); "
                                    "choose an empty or new folder, or pass --overwrite (secateur then replaces "
                                    "only files with the names it writes)")
        for rel in sorted(previous or [], key=lambda r: -r.count("/")):
            path = self.root / rel
            if rel.endswith("/"):
                _remove_tree(path)
            elif path.is_dir() and not path.is_symlink():
                remove_saved(path)
            elif path.is_file() or path.is_symlink():
                fs.remove_file(path)
        parents = {r.rstrip("/").rpartition("/")[0] for r in previous or []} - {""}
        for rel in sorted(parents, key=lambda r: -r.count("/")):
            if (self.root / rel).is_dir() and not any((self.root / rel).iterdir()):
                fs.remove_dir(self.root / rel)

    def _record(self, status: str) -> None:
        data = json.dumps({"format": "secateur.run.v1", "status": status, "files": self.files}, indent=1)
        self._replace(RECORD, data.encode())

    def _replace(self, name: str, data: bytes) -> None:
        tmp = self.root / f".{name}.{secrets.token_hex(4)}.tmp"
        fs.write_file(tmp, data)
        fs.rename(tmp, self.root / name)

    def path(self, rel: str) -> Path:
        """The path of a file (or saved folder) the run writes, ``rel`` being a relative path of plain names."""
        if not _inside(rel):
            raise OutputExistsError(f"{rel!r} is not a relative path of plain names; secateur writes only inside "
                                    f"{self.root}")
        path = self.root.joinpath(*rel.split("/"))
        if rel not in self.files:
            if (path.exists() or path.is_symlink()) and not self.overwrite:
                raise OutputExistsError(f"{path} exists and secateur did not write it; move it or pass --overwrite")
            self.files.append(rel)
            self._record("running")
        with fs.writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def directory(self, rel: str) -> Path:
        """A folder the run fills with files of its own naming (TensorBoard events, checkpoints); the next
        run into this output folder deletes it whole."""
        path = self.path(f"{rel}/")
        with fs.writing(path):
            path.mkdir(exist_ok=True)
        return path

    def write_text(self, rel: str, text: str) -> Path:
        """Write a text file atomically (a reader sees the old content or the new)."""
        return self.write_bytes(rel, text.encode())

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write a file atomically (a reader sees the old content or the new)."""
        path = self.path(rel)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        with fs.writing(path):
            fs.write_file(tmp, data)
            fs.rename(tmp, path)
        return path


def _remove_tree(path: Path) -> None:
    """Delete a folder the run filled (its links are removed, never followed)."""
    if path.is_symlink() or not path.is_dir():
        if path.is_symlink() or path.exists():
            fs.remove_file(path)
        return
    for child in path.iterdir():
        _remove_tree(child)
    fs.remove_dir(path)


def _inside(rel: str) -> bool:
    rel = rel.removesuffix("/")
    return bool(rel) and all(fs.NAME.fullmatch(part) and part not in (".", "..") for part in rel.split("/"))


def output_folder(out: str | os.PathLike | OutputFolder, overwrite: bool = False):
    """A context for writing into ``out``: the caller's open :class:`OutputFolder`, or a new one."""
    return nullcontext(out) if isinstance(out, OutputFolder) else OutputFolder(out, overwrite)
