"""Files written whole or not at all: every writer of segjax writes a temporary file beside the
target and renames it (``os.replace``, atomic on POSIX), so an interrupted run never leaves a
half-written file, and an error removes the temporary file."""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside ``path`` (same extension, so that writers that go by it
  work); renames it to ``path`` when the block ends, removes it when the block raises. A file gets
  the permissions ``open`` gives under the process's umask (some writers create 0600 files)."""
  tmp = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"
  try:
    yield tmp
    if os.path.isfile(tmp):
      umask = os.umask(0)
      os.umask(umask)
      os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_atomic(path: str, write: Callable[[str], Any]) -> str:
  """Calls ``write(temporary path)``, then renames the file to ``path``; returns ``path``."""
  with atomic_path(path) as tmp:
    write(tmp)
  return path


def _json_default(value):
  try:
    return float(value)
  except (TypeError, ValueError):
    return str(value)


def write_json(path: str, payload) -> str:
  """``payload`` as indented JSON (numpy scalars as numbers; NaN is an error), atomically."""
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(payload, f, indent=2, default=_json_default, allow_nan=False)
  return write_atomic(path, write)


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
