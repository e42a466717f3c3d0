"""Reads the arrays of a legacy (torch < 1.6, non-zip) `torch.save` file without torch: the
format of DISTS_pytorch's weights.pt. Test-only: it checks the vendored DISTS alpha/beta."""

import io
import pickle

import numpy as np

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64}


class _Tensor:
  def __init__(self, key, offset, shape, stride):
    self.key, self.offset, self.shape, self.stride = key, offset, tuple(shape), tuple(stride)


class _Unpickler(pickle.Unpickler):

  def __init__(self, f):
    super().__init__(f)
    self.storages = {}

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return dict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return lambda storage, offset, shape, stride, *_: _Tensor(storage, offset, shape, stride)
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return lambda data, *_: data
    if module == "torch" and name in _DTYPES:
      return name
    raise pickle.UnpicklingError(f"refused global {module}.{name}")

  def persistent_load(self, pid):
    _, storage_type, key, _location, _numel, _view = pid
    self.storages[key] = np.dtype(_DTYPES[storage_type])
    return key


def load(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a legacy torch file holding a flat dict of tensors."""
  with open(path, "rb") as f:
    data = f.read()
  f = io.BytesIO(data)
  for _ in range(3):  # magic number, protocol version, system info
    pickle.load(f)
  unpickler = _Unpickler(f)
  tree = unpickler.load()
  flat = {}
  for key in pickle.load(f):  # storages follow in this order: int64 count, then the data
    count = int(np.frombuffer(f.read(8), "<i8")[0])
    dtype = unpickler.storages[key]
    flat[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
  out = {}
  for name, t in tree.items():
    itemsize = flat[t.key].itemsize
    out[name] = np.lib.stride_tricks.as_strided(
        flat[t.key][t.offset:], t.shape, [s * itemsize for s in t.stride]).copy()
  return out
