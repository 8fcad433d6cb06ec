"""Atomic writes: every file or directory omni_lab writes for a user (GGUF, references, reports, WAV, .npz)
goes through here, so a reader, or a run killed at any moment, sees the old complete version, the new
complete version, or nothing under the final name; never a part.

The new version is written under a hidden temporary name in the same folder (the same file system, so the
rename is atomic): `.<name>.tmp-<pid>-<random>`. It is flushed and fsynced, renamed over the final name, and
the folder fsynced so the rename itself survives a power cut. A directory cannot be renamed over a non-empty
one, so a directory is swapped with the old one in one step (Linux renameat2 RENAME_EXCHANGE); where the
system has no such call, the old one is first renamed to `.<name>.old-<pid>-<random>`, and a run killed
between the two renames leaves it there for the next run to put back.

A killed run leaves its temporary behind (nothing can remove it at SIGKILL); the next write of the same name
removes every leftover whose process is gone (`clean_leftovers`), and `OUT.partial`, the name versions
before this module used.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP, OLD = ".tmp-", ".old-"


def temp_name(final: Path, kind: str = TMP) -> Path:
    return final.with_name(f".{final.name}{kind}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _owner(leftover: Path, final: Path, kind: str) -> int | None:
    """The pid in a leftover's name, or None when it is not one of `final`'s."""
    rest = leftover.name[len(f".{final.name}{kind}"):]
    pid = rest.split("-", 1)[0]
    return int(pid) if leftover.name.startswith(f".{final.name}{kind}") and pid.isdigit() else None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def clean_leftovers(final: str | Path) -> list[Path]:
    """Remove what killed writes of `final` left beside it (their processes are gone), and put back an old
    directory a kill left renamed aside when nothing took its place. Returns what was removed or restored."""
    final = Path(final)
    folder = final.parent
    if not folder.is_dir():
        return []
    done = []
    for p in sorted(folder.glob(f".{final.name}{OLD}*")):
        pid = _owner(p, final, OLD)
        if pid is None or _alive(pid):
            continue
        if not final.exists():  # killed between its two renames: the old version is the one to keep
            os.rename(p, final)
        else:
            _remove(p)
        done.append(p)
    for p in [*folder.glob(f".{final.name}{TMP}*"), folder / f"{final.name}.partial"]:
        pid = _owner(p, final, TMP) if p.name.startswith(".") else 0
        if p.exists() and pid is not None and (pid == 0 or not _alive(pid)):
            _remove(p)
            done.append(p)
    return done


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for f in files:
            _fsync(Path(root) / f)
        _fsync(Path(root))


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` to write a file to (by path: for writers such as soundfile and
    GGUFWriter that open it themselves); on leaving the block it is fsynced and renamed over `final`. An
    exception removes it and leaves `final` as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final)
    tmp = temp_name(final)
    try:
        yield tmp
        commit(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def commit(tmp: Path, final: Path) -> None:
    """Put the complete file `tmp` in `final`'s place: fsync it, rename it, fsync the folder."""
    _fsync(tmp)
    os.replace(tmp, final)
    _fsync(final.parent)


def write_bytes(final: str | Path, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text(final: str | Path, text: str) -> Path:
    return write_bytes(final, text.encode("utf-8"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where there is none."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):  # a kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `final` to build into; on leaving the block its files are fsynced and
    it takes `final`'s place (the old version, if any, removed only once the new one is in place). An
    exception removes it and leaves `final` as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final)
    tmp = temp_name(final)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if not final.exists():
            os.rename(tmp, final)
        elif _exchange(tmp, final):  # tmp now holds the old version
            pass
        else:
            old = temp_name(final, OLD)
            os.rename(final, old)
            os.rename(tmp, final)
            tmp = old
        _fsync(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
