"""Files written whole or not at all: every writer of segjax writes a temporary file beside the
target, flushes it to the disk (``fsync``), renames it (``os.replace``, atomic on POSIX) and
flushes the directory that holds the new name, so neither a killed process nor a power loss
leaves a half-written file or loses one that was acknowledged, and an error removes the temporary
file."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str, mode: int | None = None) -> Iterator[str]:
  """Yields a temporary path beside ``path`` (``PATH.tmpPID-THREAD.ext``: one per writing thread,
  and the same extension, so that writers that go by it work); renames it to ``path`` when the
  block ends, removes it when the block raises. A file gets the permissions ``mode``, else those
  ``open`` gives under the process's umask (some writers create 0600 files)."""
  tmp = f"{path}.tmp{os.getpid()}-{threading.get_ident()}{os.path.splitext(path)[1]}"
  try:
    yield tmp
    if os.path.isfile(tmp) and mode is not None:
      os.chmod(tmp, mode)
    elif os.path.isfile(tmp):
      umask = os.umask(0)
      os.umask(umask)
      os.chmod(tmp, 0o666 & ~umask)
    fsync_tree(tmp)
    os.replace(tmp, path)
    fsync(os.path.dirname(os.path.abspath(path)))
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def fsync(path: str) -> None:
  """Flushes the file or directory ``path`` (its data and, for a directory, its entries) to the
  disk."""
  mode = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
  descriptor = os.open(path, mode)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def fsync_tree(path: str) -> None:
  """`fsync` of a file, or of a directory with every file and directory below it (writers such
  as a GeoTIFF or a checkpoint may write a directory)."""
  if os.path.isdir(path):
    for folder, _, names in os.walk(path, topdown=False):
      for name in names:
        fsync(os.path.join(folder, name))
      fsync(folder)
  elif os.path.exists(path):
    fsync(path)


def write_atomic(path: str, write: Callable[[str], Any], mode: int | None = None) -> str:
  """Calls ``write(temporary path)``, then renames the file to ``path`` (`atomic_path`); returns
  ``path``."""
  with atomic_path(path, mode) as tmp:
    write(tmp)
  return path


def _json_default(value):
  try:
    return float(value)
  except (TypeError, ValueError):
    return str(value)


def write_json(path: str, payload, private: bool = False) -> str:
  """``payload`` as indented JSON (numpy scalars as numbers; NaN is an error), atomically;
  ``private``: readable by its owner only (mode 0600 from its creation: for secrets)."""

  def write(tmp):
    opener = (lambda name, flags: os.open(name, flags, 0o600)) if private else None
    with open(tmp, "w", opener=opener) as f:
      json.dump(payload, f, indent=2, default=_json_default, allow_nan=False)

  return write_atomic(path, write, 0o600 if private else None)


def write_bytes(path: str, data: bytes) -> str:
  """``data`` to ``path``, atomically."""

  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(data)

  return write_atomic(path, write)


def write_text(path: str, text: str) -> str:
  """``text`` to ``path``, atomically."""

  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)

  return write_atomic(path, write)


def sha256(*paths: str) -> str:
  """The SHA-256 (hex) of the files' bytes, one after another."""
  import hashlib  # pylint: disable=import-outside-toplevel

  digest = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  return digest.hexdigest()
