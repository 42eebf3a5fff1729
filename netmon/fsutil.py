"""The one way this project replaces a file: atomically and durably.

After a crash or power loss at any instant (a probe's SD card loses power often) the file
holds either its old or its new content, never a mix, and once the call returns the new
content survives a power cut:

1. write a temporary file with a unique name in the *same* folder (a rename is only
   atomic within one file system, and two writers must never share a temporary file);
2. ``fsync`` it, so its data is on disk before its name is;
3. ``rename`` it over the target (atomic on POSIX);
4. ``fsync`` the folder, so the rename itself is on disk.

On any error the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o600, *, owner: tuple[int, int] | None = None,
                  overwrite: bool = True) -> Iterator[BinaryIO]:
    """Write ``path`` through a binary file object; it replaces ``path`` on success.

    ``mode`` is the file's exact permission bits (not filtered by the umask, so a secret
    is never left readable by a permissive umask). ``owner`` (uid, gid) chowns the new
    file, for rewriting a file that belongs to another account. ``overwrite=False``
    refuses (FileExistsError, nothing written) when ``path`` already exists, checked
    atomically at the end. The parent folder is created when missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            if owner is not None:
                st = os.fstat(fh.fileno())
                if (st.st_uid, st.st_gid) != owner:  # chown only what differs (needs root)
                    os.fchown(fh.fileno(), *owner)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: no check-then-write race
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600, *,
                 encoding: str = "utf-8", owner: tuple[int, int] | None = None,
                 overwrite: bool = True) -> None:
    """Replace ``path`` with ``data`` (text is encoded with ``encoding``); see
    :func:`atomic_writer` for ``mode``, ``owner`` and ``overwrite``."""
    raw = data.encode(encoding) if isinstance(data, str) else data
    with atomic_writer(path, mode, owner=owner, overwrite=overwrite) as fh:
        fh.write(raw)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
