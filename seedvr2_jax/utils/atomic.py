"""Files and directories that appear complete or not at all.

Everything is written under a temporary sibling name (`temporary_path`), renamed onto the final
path when complete (`commit`) and deleted otherwise (`discard`); `atomic_path` does all three
around a `with` block. Callers check overwrite permission first: `commit` replaces what is there.
"""

from __future__ import annotations

import contextlib
import os
import shutil


def temporary_path(path: str) -> str:
  """The temporary sibling of `path`; it keeps the extension, so writers that pick a format by
  extension (FFmpeg) see the final one."""
  root, ext = os.path.splitext(path)
  return f"{root}.partial-{os.getpid()}{ext}"


def remove_stale_temporaries(path: str) -> list[str]:
  """Deletes the temporaries of `path` left by processes that no longer run (a killed
  writer); returns them."""
  root, ext = os.path.splitext(path)
  folder, prefix = os.path.dirname(root) or ".", os.path.basename(root) + ".partial-"
  removed = []
  for name in os.listdir(folder):
    pid = name[len(prefix):len(name) - len(ext)] if name.endswith(ext) else ""
    if not name.startswith(prefix) or not pid.isdigit():
      continue
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      discard(os.path.join(folder, name))
      removed.append(os.path.join(folder, name))
    except PermissionError:  # alive, another user's
      pass
  return removed


def commit(tmp: str, path: str) -> None:
  """Renames the finished `tmp` onto `path`; an existing directory there is removed first (a
  file is replaced by the rename itself)."""
  if os.path.isdir(path):
    shutil.rmtree(path)
  os.replace(tmp, path)


def discard(tmp: str) -> None:
  """Deletes the temporary file or directory `tmp`, if it exists."""
  if os.path.isdir(tmp):
    shutil.rmtree(tmp)
  elif os.path.exists(tmp):
    os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str):
  """Yields the temporary path to write (a file, or a directory the caller creates); on success
  it replaces `path`, on failure it is deleted."""
  tmp = temporary_path(path)
  try:
    yield tmp
    commit(tmp, path)
  finally:
    discard(tmp)


@contextlib.contextmanager
def atomic_dir(out: str):
  """`atomic_path` for a directory: yields the temporary directory, already created."""
  with atomic_path(out) as tmp:
    os.makedirs(tmp)
    yield tmp


def write_text(path: str, text: str, *, overwrite: bool = False) -> None:
  """Writes `text` to `path` atomically; an existing `path` is replaced only with `overwrite`
  (else FileExistsError)."""
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(path)
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    f.write(text)
