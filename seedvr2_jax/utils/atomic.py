"""Files and directories that appear complete or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil


@contextlib.contextmanager
def atomic_dir(out: str):
  """Yields a temporary sibling of `out` to fill; on success it replaces `out` (an existing one
  is removed first: callers check overwrite permission), on failure it is deleted."""
  tmp = f"{out}.partial-{os.getpid()}"
  os.makedirs(tmp)
  try:
    yield tmp
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def write_text(path: str, text: str, *, overwrite: bool = False) -> None:
  """Writes `text` to a temporary sibling, then renames it to `path`; an existing `path` is
  replaced only with `overwrite` (else FileExistsError)."""
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(path)
  tmp = f"{path}.partial-{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
