"""Reads PyTorch `.pth`/`.pt` files (zip format, torch >= 1.6) without torch and without
executing arbitrary pickled code.

The unpickler resolves only the globals a tensor state_dict needs (tensor rebuild functions,
typed storages, dtypes, OrderedDict); anything else is refused. Tensors are returned lazily:
their storage is memory-mapped from the (uncompressed) zip member and copied only on access.
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from collections.abc import Iterator, Mapping

import ml_dtypes
import numpy as np

from seedvr2_jax.errors import CheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16,
    "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


class _Storage:
  """A storage key within the archive and its element dtype."""

  def __init__(self, key: str, dtype):
    self.key, self.dtype = key, np.dtype(dtype)


class LazyTensor:
  """A strided view into a storage; `numpy()` materialises a contiguous copy."""

  def __init__(self, reader: "TorchCheckpoint", storage: _Storage, offset: int, shape, stride):
    self._reader, self._storage = reader, storage
    self.offset, self.shape, self.stride = int(offset), tuple(shape), tuple(stride)
    self.dtype = storage.dtype

  def numpy(self) -> np.ndarray:
    flat = self._reader.storage_array(self._storage)
    if not self.shape:
      return flat[self.offset].copy()
    itemsize = self.dtype.itemsize
    needed = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1
    if min(self.shape) > 0 and needed > flat.size:
      raise CheckpointError(f"{self._reader.path}: tensor storage {self._storage.key} is truncated")
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], self.shape, [s * itemsize for s in self.stride], writeable=False)
    return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, reader: "TorchCheckpoint"):
    super().__init__(file)
    self._reader = reader

  def find_class(self, module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3"):
      return self._rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return lambda data, requires_grad, hooks: data
    if module == "torch" and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]
    if module == "torch" and name in _TORCH_DTYPES:
      return np.dtype(_TORCH_DTYPES[name])
    if (module, name) == ("_codecs", "encode"):
      return lambda s, enc="latin1": s.encode(enc)
    raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    _, storage_type, key, _location, _numel = pid
    dtype = storage_type if isinstance(storage_type, np.dtype) else np.dtype(storage_type)
    return _Storage(str(key), dtype)

  def _rebuild_tensor(self, storage, offset, shape, stride, *args):
    # v3 passes the dtype after the hooks: (requires_grad, hooks, dtype[, metadata]).
    if len(args) >= 3 and isinstance(args[2], np.dtype):
      storage = _Storage(storage.key, args[2])
    return LazyTensor(self._reader, storage, offset, shape, stride)


class TorchCheckpoint(Mapping):
  """Lazy mapping name -> np.ndarray over a torch zip checkpoint holding a (nested) state_dict
  or a single tensor (exposed under the key "")."""

  def __init__(self, path: str):
    self.path = str(path)
    try:
      self._zip = zipfile.ZipFile(self.path)
      names = self._zip.namelist()
      pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
      if pkl is None:
        raise CheckpointError(f"{self.path}: no data.pkl in the archive (not a torch checkpoint)")
      self._prefix = pkl[: -len("data.pkl")]
      with self._zip.open(pkl) as f:
        obj = _Unpickler(f, self).load()
    except zipfile.BadZipFile:
      raise CheckpointError(f"{self.path}: not a zip-format torch checkpoint (legacy torch < 1.6 "
                            "files are not supported; re-save with a current torch)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error) as e:
      if isinstance(e, CheckpointError):
        raise
      raise CheckpointError(f"{self.path}: corrupt or unsupported torch pickle ({e})") from None
    except OSError as e:
      raise CheckpointError(f"{self.path}: cannot read ({e.strerror or e})") from None
    self._tensors = dict(_flatten(obj))
    self._file = open(self.path, "rb")
    self._arrays: dict[str, np.ndarray] = {}

  def storage_array(self, storage: _Storage) -> np.ndarray:
    """The whole storage as a flat memory-mapped array."""
    if storage.key not in self._arrays:
      name = f"{self._prefix}data/{storage.key}"
      try:
        info = self._zip.getinfo(name)
      except KeyError:
        raise CheckpointError(f"{self.path}: missing tensor storage {name}") from None
      if info.compress_type != zipfile.ZIP_STORED:
        with self._zip.open(info) as f:
          data = np.frombuffer(f.read(), np.uint8)
      else:
        self._file.seek(info.header_offset)
        header = self._file.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
          raise CheckpointError(f"{self.path}: corrupt zip entry {name}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        data = np.memmap(self.path, np.uint8, mode="r", offset=start, shape=(info.file_size,))
      usable = data.size - data.size % storage.dtype.itemsize
      self._arrays[storage.key] = data[:usable].view(storage.dtype)
    return self._arrays[storage.key]

  def __getitem__(self, name: str) -> np.ndarray:
    return self._tensors[name].numpy()

  def shape(self, name: str) -> tuple[int, ...]:
    return self._tensors[name].shape

  def __iter__(self) -> Iterator[str]:
    return iter(self._tensors)

  def __len__(self) -> int:
    return len(self._tensors)


def _flatten(obj, prefix: str = ""):
  """Yields (dotted key, LazyTensor) from nested dicts; non-tensor leaves are skipped."""
  if isinstance(obj, LazyTensor):
    yield prefix, obj
  elif isinstance(obj, Mapping):
    for k, v in obj.items():
      yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
