"""Many inputs, one model load: what `seedvr2-jax restore` runs.

`restore INPUT OUTPUT` is one job; `restore INPUT... -o DIR` makes a job per input (a folder of
videos or a `.txt` list of paths expands to its videos; a folder of images stays one
frame-folder input), each written to DIR/NAME.EXT. Jobs share one `api.Restorer`; with several
processes (`--distributed`) process i takes jobs i, i + n, ... A job whose output exists is
skipped without `overwrite`, and one that fails is reported and the others go on; the summary
counts both.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

from seedvr2_jax.data import video_io
from seedvr2_jax.errors import InputError, SeedVR2Error
from seedvr2_jax.infer.options import RestoreOptions

FRAMES_EXT = "frames"  # `output_ext` for PNG frame folders


def _list_file(path: str) -> list[str]:
  """Paths of a list file, one a line (blank lines and # comments skipped), relative to it."""
  with open(path) as f:
    lines = [line.strip() for line in f]
  base = os.path.dirname(path)
  return [os.path.join(base, line) for line in lines if line and not line.startswith("#")]


def _expand(path: str) -> list[str]:
  if os.path.isdir(path):
    videos = sorted(f for f in os.listdir(path) if f.lower().endswith(video_io.VIDEO_EXTENSIONS))
    return [os.path.join(path, f) for f in videos] or [path]
  if path.lower().endswith(".txt"):
    return _list_file(path)
  return [path]


def jobs_for(inputs: list[str], output_dir: str, output_ext: str) -> list[tuple[str, str]]:
  """(input, output) pairs: each expanded input to `output_dir`/its name + `output_ext`
  (FRAMES_EXT: a PNG folder)."""
  ext = "" if output_ext == FRAMES_EXT else "." + output_ext.lstrip(".")
  jobs, seen = [], {}
  for path in (p for given in inputs for p in _expand(given)):
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    out = os.path.join(output_dir, name + ext)
    if out in seen:
      raise InputError(f"{seen[out]} and {path} would both be written to {out}")
    seen[out] = path
    jobs.append((path, out))
  if not jobs:
    raise InputError(f"no inputs found in {' '.join(inputs)}")
  return jobs


@dataclasses.dataclass
class Summary:
  restored: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)
  failed: list[str] = dataclasses.field(default_factory=list)

  def line(self) -> str:
    return (f"restored {len(self.restored)}, skipped {len(self.skipped)} (output exists; "
            f"--overwrite replaces), failed {len(self.failed)}")


def _attempt(fn, label: str, src: str, summary: Summary, log) -> bool:
  """Runs a step of the job of input `src`; on a SeedVR2Error the job is reported and counted
  failed (False)."""
  try:
    fn()
  except SeedVR2Error as e:
    log(f"{label} failed {src}: {e}")
    summary.failed.append(src)
    return False
  return True


def restore_jobs(jobs: list[tuple[str, str]], options: RestoreOptions, *, many: bool,
                 process: tuple[int, int] = (0, 1), log=print) -> Summary:
  """Restores this process's share of `jobs` with one model load. One job (`many` False)
  fails with its own error; with `many`, existing outputs are skipped, errors are reported
  per job and the others go on (InputError at the end if any failed).
  `process`: (index, count) of this process among those sharing the jobs."""
  from seedvr2_jax.infer import api  # loads JAX: only when restoring
  index, count = process
  mine = jobs[index::count]
  summary = Summary()
  if many:
    summary.skipped = [out for _, out in mine if os.path.exists(out) and not options.overwrite]
    for out in summary.skipped:
      log(f"skip {out}: exists")
    mine = [(src, out) for src, out in mine if out not in summary.skipped]
  if mine:
    restorer = api.Restorer.from_options(options, log=log)
  if not many:
    for src, out in mine:
      restorer.restore_file(src, out)
      summary.restored.append(out)
    return summary
  # Each output's last step (encoder flush, mux, rename) runs on this thread while the next
  # input is restored; one at a time, so an output is finished before the next one's starts.
  with concurrent.futures.ThreadPoolExecutor(1) as finisher:
    finishing = []  # at most one (label, input, output, future of its last step)

    def settle():
      while finishing:
        label, src, out, future = finishing.pop()
        if _attempt(future.result, label, src, summary, log):
          summary.restored.append(out)

    def restore_one(src, out, handed):
      os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
      restorer.restore_file(src, out,
                            finish_with=lambda step: handed.append(finisher.submit(step)))

    try:
      for i, (src, out) in enumerate(mine):
        label, handed = f"[{i + 1}/{len(mine)}]", []
        log(f"{label} {src} -> {out}")
        restored = _attempt(lambda: restore_one(src, out, handed), label, src, summary, log)
        settle()  # the previous output's last step, which ran beside this input
        if restored and handed:
          finishing.append((label, src, out, handed[0]))
        elif restored:  # an image: written already
          summary.restored.append(out)
    finally:
      settle()
  log(f"process {index} of {count}: {summary.line()}" if count > 1 else summary.line())
  if summary.failed:
    raise InputError(f"{len(summary.failed)} of {len(mine)} inputs failed: "
                     f"{', '.join(summary.failed)}")
  return summary
