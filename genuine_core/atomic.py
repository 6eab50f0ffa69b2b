"""Files written whole or not at all: write beside the target, then rename over it.

A full disk, a file-size limit or Ctrl-C half way through leaves the earlier file as it was
(``os.replace`` is atomic within one file system) and no temporary file behind. A set of files
(a report, a probe run) is written into a staging folder first (:func:`staged_into`), so it
lands whole or not at all.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` has, or those a new file gets under the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = 0o022
        try:  # read, not set: os.umask() would change it for every thread for a moment
            line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("Umask:"))
            umask = int(line.split()[1], 8)
        except (OSError, StopIteration, ValueError, IndexError):
            pass
        return 0o666 & ~umask


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends without an error it
    replaces ``path`` (keeping its permissions, or the umask's for a new file), otherwise it is
    deleted and ``path`` is left untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except OSError as exc:  # a write the disk refused names ``path``, not the temporary file
        Path(tmp).unlink(missing_ok=True)
        named = naming(exc, path)
        if named is exc:
            raise
        if named.filename == tmp:
            named.filename = str(path)
        raise named from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`replacing`."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


#: what numpy's ``tofile`` raises when the disk takes fewer bytes than asked (no errno)
_SHORT_WRITE = re.compile(r"\b\d+ requested and \d+ written$")
#: errnos of a write the disk refused (as the CLI reports them in one line)
_REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_short_write(exc: BaseException) -> bool:
    """Whether ``exc`` is numpy's error for a file the disk took only part of (a full disk; it has no errno)."""
    return isinstance(exc, OSError) and exc.errno is None and bool(_SHORT_WRITE.search(str(exc)))


def naming(exc: OSError, where: Path, stage: Path | None = None) -> OSError:
    """A write the disk refused as an OSError naming its file (a staging copy in ``stage`` by its place in the
    folder ``where``), else ``where``, with an errno also for numpy's short write (a full disk); other errors
    as they are."""
    code = errno.ENOSPC if is_short_write(exc) else exc.errno
    if code not in _REFUSED:
        return exc
    name = Path(str(exc.filename)) if exc.filename else None
    staged = name is not None and stage is not None and os.path.abspath(name.parent) == os.path.abspath(stage)
    target = where / name.name if staged else name or where
    return OSError(code, os.strerror(code), str(target))


@contextmanager
def staged_into(folder: str | Path) -> Iterator[Path]:
    """Yield a new hidden folder inside ``folder`` to write a set of files into.

    When the block ends without an error each file moves into ``folder`` (replacing one of its name);
    otherwise none does, the staging folder is deleted and ``folder`` keeps its earlier files. A write the
    disk refused (full, read-only, quota) is raised as an OSError naming the file in ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=folder, prefix=".staged-"))
    try:
        yield stage
        for f in sorted(stage.iterdir()):
            os.replace(f, folder / f.name)
    except OSError as exc:
        named = naming(exc, folder, stage)
        if named is exc:
            raise
        raise named from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
