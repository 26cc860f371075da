"""Reading and writing files: the one reader, whose decoding and I/O errors become the one-line
error of their kind, and the one writer, which writes to a temporary name and renames it into
place, so a failed write leaves the old file or none, never a torn one.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from .errors import BnonlyError, OutputError


def reason(e: BaseException) -> str:
    """The short reason of an I/O or decoding error: 'No space left on device', 'invalid start byte'."""
    return getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e).splitlines()[0] or type(e).__name__


def read_text(path, error: type[BnonlyError], what: str) -> str:
    """A UTF-8 text file, or `error` in one line naming it (missing, a directory, unreadable, not UTF-8)."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not {what}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not {what} (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except OSError as e:
        raise error(f"{path}: cannot read it ({reason(e)})") from None


def write(path, produce: Callable[[object], None], what: str, mode: str = "wb") -> Path:
    """Write `path` through produce(file), all or nothing: into a temporary file beside it, then
    renamed over it. A device or other special file (/dev/null) is written in place, as asked. Any
    failure is an OutputError naming `what` and the path; the temporary file is removed."""
    path = Path(path)
    if path.is_symlink():  # a link is followed (its target rewritten), not replaced by a file
        path = Path(os.path.realpath(path))
    try:
        special = path.exists() and not stat.S_ISREG(path.stat().st_mode)
        if special:
            with open(path, mode) as fh:
                produce(fh)
            return path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
        try:
            os.chmod(fd, permissions(path))  # (mkstemp's file is 0600)
            with os.fdopen(fd, mode) as fh:
                produce(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, RuntimeError) as e:  # (torch.save reports a failed write as a RuntimeError)
        raise OutputError(f"{what} {path}: cannot write it ({reason(e)})") from None
    return path


def staging(parent: Path, what: str) -> Path:
    """A new directory `.WHAT-PID-xxxx` in parent, where a report or analysis is written before its
    files are moved into place; those a killed process of this machine left behind are removed first."""
    for old in parent.glob(f".{what}-*-*"):
        pid = old.name.split("-")[-2]
        if old.is_dir() and pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{what}-{os.getpid()}-", dir=parent))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def permissions(path: Path) -> int:
    """The mode a written file gets: the file's own where it exists, else what open() would give
    (0666 less the umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def strict_json(obj, **kwargs) -> str:
    """JSON that strict parsers read (RFC 8259 has no NaN or Infinity): a non-finite float written as
    null; what a file or a line bnonly prints for others holds (`train --json`, report.json)."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
