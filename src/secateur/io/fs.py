"""Every change secateur makes to the filesystem goes through the few primitives here, plus a per-folder lock.

Each primitive first calls ``FAULTS.before(op, path)``: tests set a hook there to stop a save, load or
checkpoint between any two writes (``tests/test_faults.py``). Files are created exclusively (``O_EXCL``,
never through a symbolic link) and synced before they count as written.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import FolderLockedError, ModelFileError, OutputError, SecateurError

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
CHUNK = 16 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class Faults:
    """The hook tests use to interrupt secateur between filesystem operations (None: no faults)."""

    hook: Callable[[str, str], None] | None = None

    def before(self, op: str, path: str | os.PathLike) -> None:
        if self.hook is not None:
            self.hook(op, str(path))


FAULTS = Faults()


def check_name(name: object, where: str) -> str:
    """``name`` if it is a plain file name (no folder part, no leading dot), else a :class:`ModelFileError`.

    >>> check_name("model.safetensors", "manifest")
    'model.safetensors'
    """
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in (".", ".."):
        raise ModelFileError(f"{where}: {name!r} is not a plain file name inside the folder; the manifest is damaged "
                             "or was written to reach files elsewhere")
    return name


@contextmanager
def writing(where: str | os.PathLike) -> Iterator[None]:
    """Turn an operating-system refusal to write (permissions, space, a path through a file) into a named
    :class:`OutputError`."""
    try:
        yield
    except SecateurError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write {where}: {err.strerror or err}; choose a folder you can write to (with "
                          "free space)") from None


def _pieces(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    step = min(CHUNK, max(1, len(view) // 2))  # at least two pieces, so a write can be torn half-way in tests
    for start in range(0, len(view), step):
        yield view[start : start + step]


def write_file(path: Path, data: bytes) -> dict:
    """Create ``path`` (it must not exist), write ``data``, sync it; return its size and SHA-256."""
    FAULTS.before("create", path)
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        for i, piece in enumerate(_pieces(data)):
            if i:
                FAULTS.before("write", path)
            handle.write(piece)
            digest.update(piece)
        handle.flush()
        os.fsync(handle.fileno())
    return {"bytes": len(data), "sha256": digest.hexdigest()}


def make_dir(path: Path) -> None:
    FAULTS.before("mkdir", path)
    path.mkdir()


def rename(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (a file replaces a file; a folder only moves to a free name)."""
    FAULTS.before("rename", dst)
    os.rename(src, dst)


def link(src: Path, dst: Path) -> None:
    """A second name for ``src`` (a hard link; a copy where links are not supported)."""
    FAULTS.before("link", dst)
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        write_file(dst, src.read_bytes())


def remove_file(path: Path) -> None:
    FAULTS.before("unlink", path)
    path.unlink(missing_ok=True)


def remove_dir(path: Path) -> None:
    FAULTS.before("rmdir", path)
    path.rmdir()


def sync_dir(path: Path) -> None:
    """Make a folder's entries (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux ``renameat2``); False where the system cannot."""
    FAULTS.before("exchange", b)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(b))


class FolderLock:
    """An exclusive lock on a folder, held through the sibling file ``.NAME.secateur-lock`` for as long as
    the ``with`` block runs; a second writer fails at once with :class:`FolderLockedError`.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "out"
    >>> with FolderLock(folder):
    ...     try:
    ...         FolderLock(folder).__enter__()
    ...     except FolderLockedError:
    ...         print("busy")
    busy
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder.parent / f".{folder.name}.secateur-lock"
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderLockedError(f"another process is writing {self.folder} right now; wait for it to finish "
                                        "or write somewhere else") from None
            try:
                current = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:  # not a lock file its last holder removed while we opened it
                self.fd = fd
                return self
            os.close(fd)
        raise FolderLockedError(f"could not lock {self.folder}: its lock file keeps changing")

    def __exit__(self, *exc: object) -> None:
        try:
            FAULTS.before("unlock", self.path)
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None
