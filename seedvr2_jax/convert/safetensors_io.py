"""Safetensors read/write with numpy + ml_dtypes (bf16 included), tensor by tensor.

Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
then the raw little-endian tensor bytes. Reading memory-maps the file, so a tensor is only read
when it is accessed; writing goes to a temporary file that is renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping

import ml_dtypes
import numpy as np

from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.utils import atomic

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 2**20


class SafetensorsFile(Mapping):
  """Lazy read-only mapping name -> np.ndarray over a .safetensors file."""

  def __init__(self, path: str):
    self.path = os.fspath(path)
    try:
      size = os.path.getsize(self.path)
      with open(self.path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, _MAX_HEADER):
          raise ValueError(f"header length {n} exceeds the file")
        header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
      raise CheckpointError(f"{self.path}: not a readable safetensors file ({e})") from None
    self.metadata = header.pop("__metadata__", {}) or {}
    self._entries = header
    self._data_start = 8 + n
    self._size = size
    self._mmap = None
    for name, e in header.items():
      if e.get("dtype") not in DTYPES:
        raise CheckpointError(
            f"{self.path}: tensor {name!r} has unsupported dtype {e.get('dtype')}")
      begin, end = e["data_offsets"]
      expected = int(np.prod(e["shape"], dtype=np.int64)) * DTYPES[e["dtype"]].itemsize
      if end - begin != expected or self._data_start + end > size:
        raise CheckpointError(f"{self.path}: tensor {name!r} is truncated or corrupt")

  def _buffer(self) -> np.memmap:
    if self._mmap is None:
      self._mmap = np.memmap(self.path, np.uint8, mode="r")
    return self._mmap

  def __getitem__(self, name: str) -> np.ndarray:
    e = self._entries[name]
    begin, end = e["data_offsets"]
    raw = self._buffer()[self._data_start + begin:self._data_start + end]
    return raw.view(DTYPES[e["dtype"]]).reshape(e["shape"])

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name]["shape"])

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)


def save_file(tensors: Mapping[str, np.ndarray], path: str,
              metadata: Mapping[str, str] | None = None) -> None:
  """Writes tensors to `path` atomically (`utils.atomic`).

  Values need `.shape` and `.dtype` (numpy or jax arrays); each is materialised on the host only
  while it is written, so host memory stays at about one tensor.
  """
  header, offset = {}, 0
  for name, value in tensors.items():
    dtype = np.dtype(value.dtype)
    if dtype not in _NAMES:
      raise CheckpointError(f"cannot write tensor {name!r} of dtype {dtype} to safetensors")
    nbytes = int(np.prod(value.shape, dtype=np.int64)) * dtype.itemsize
    header[name] = {"dtype": _NAMES[dtype], "shape": [int(d) for d in value.shape],
                    "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  if metadata:
    header["__metadata__"] = dict(metadata)
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name, value in tensors.items():
      arr = np.ascontiguousarray(np.asarray(value))
      f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
