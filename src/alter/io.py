"""Atomic file output: every result is written to a temporary file and renamed into place."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from alter.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def cache_root() -> Path:
    """Where converted models, cached bench steps and machine measurements live: `$ALTER_CACHE`, else
    ~/.cache/alter."""
    return Path(os.environ.get("ALTER_CACHE", Path.home() / ".cache" / "alter"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: outputs follow the user's umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise UserError(f"{path}: not written, no space left ({err.strerror}); earlier files are unchanged") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: malformed JSON ({err.msg} at line {err.lineno})") from None


def check_output_dir(path: str | os.PathLike) -> Path:
    """Prove, before any expensive work, that `path` can be created and written; create nothing yet, so a command
    that fails leaves no empty folder behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: output path exists and is not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{path}: cannot create the output folder ({existing} is not a folder)")
    try:
        probe = tempfile.NamedTemporaryFile(dir=existing, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as err:
        raise UserError(f"{path}: output folder is not writable ({err.strerror})") from None
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
