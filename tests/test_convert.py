"""Checkpoint readers and the DiT converter: official key maps, strict errors, round trips."""

import importlib.util
import os
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from conftest import FIXTURES, PARITY_A
from seedvr2_jax.convert import dit as dit_convert
from seedvr2_jax.convert import nnx_map
from seedvr2_jax.convert.safetensors_io import SafetensorsFile, save_file
from seedvr2_jax.convert.state_dict import open_state_dict
from seedvr2_jax.errors import CheckpointError
from seedvr2_jax.models.dit import config as dit_config
from seedvr2_jax.utils import atomic

TORCH = os.path.join(FIXTURES, "torch_pickle")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _official_keys(name):
  keys = {}
  with open(os.path.join(FIXTURES, f"official_keys_{name}.txt")) as f:
    for line in f:
      if line.strip() and not line.startswith("#"):
        key, shape, _ = line.rstrip("\n").split("\t")
        keys[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
  return keys


def _config(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return dit_config.from_config_dict(module.get_config().model)


class _Shapes(dict):
  """A state_dict stand-in that only knows shapes (full-size models are never allocated)."""

  def shape(self, key):
    return self[key]


@pytest.mark.parametrize("name,config", [("3b", "seedvr2_3b"), ("7b", "seedvr2_7b")])
def test_name_map_covers_exactly_the_official_keys(name, config):
  cfg = _config(config)
  _, abstract = dit_convert.abstract_model(cfg)
  expected = dit_convert.expected_shapes(cfg, abstract)
  nnx_map.check_keys(_Shapes(_official_keys(name)), expected, name)  # raises on any mismatch


@pytest.fixture(scope="module")
def small():
  cfg = dit_config.from_official(
      __import__("json").load(open(os.path.join(PARITY_A, "config.json")))["dit7b"]["config"],
      "7b")
  sd = open_state_dict(os.path.join(PARITY_A, "dit7b.safetensors"))
  return cfg, {k: np.array(sd[k]) for k in sd}


@pytest.mark.parametrize("corrupt,message", [
    (lambda sd: sd.pop("blocks.1.mlp.vid.proj_in.weight"),
     "missing keys: blocks.1.mlp.vid.proj_in"),
    (lambda sd: sd.update({"blocks.9.extra": np.zeros(3)}), "unexpected keys: blocks.9.extra"),
    (lambda sd: sd.update({"vid_in.proj.weight": np.zeros((64, 130), np.float32)}),
     r"mis-shaped keys: vid_in.proj.weight \(64, 130\) != expected \(64, 132\)"),
    (lambda sd: sd.update({"blocks.0.attn.rope.rope.freqs": np.array([1.0, 2.0], np.float32)}),
     "RoPE buffer blocks.0.attn.rope.rope.freqs"),
])
def test_converter_rejects_corrupted_state_dict(small, corrupt, message):
  cfg, sd = small
  sd = dict(sd)
  corrupt(sd)
  with pytest.raises(CheckpointError, match=message):
    dit_convert.load_state(sd, cfg)


def test_convert_export_roundtrip_is_exact(small):
  cfg, sd = small
  _, state = dit_convert.load_state(sd, cfg)
  exported = {k: np.asarray(v) for k, v in dit_convert.export_state(
      state, cfg, dit_convert.read_rope_buffers(sd, cfg)).items()}
  assert set(exported) == set(sd)
  for key, value in sd.items():
    assert exported[key].dtype == value.dtype and np.array_equal(exported[key], value), key


def test_rope_buffer_check_tolerates_ulps_not_other_frequencies(small):
  """Another float32 `pow` may round the file's buffers differently by an ulp or two; another
  frequency formula differs by far more than the check's 1e-6 relative tolerance."""
  cfg, sd = small
  key = "blocks.0.attn.rope.rope.freqs"
  for scale, ok in ((1 + 3e-7, True), (1 - 3e-7, True), (1 + 1e-5, False)):
    changed = dict(sd, **{key: (sd[key] * np.float32(scale)).astype(np.float32)})
    if ok:
      dit_convert.check_rope_buffers(changed, cfg)
    else:
      with pytest.raises(CheckpointError, match=f"RoPE buffer {key}"):
        dit_convert.check_rope_buffers(changed, cfg)


def test_torch_pickle_reader_matches_torch():
  ckpt = open_state_dict(os.path.join(TORCH, "tensors.pth"))
  with np.load(os.path.join(TORCH, "tensors_expected.npz")) as expected:
    assert set(ckpt) == set(expected.files)
    for key in expected.files:
      got = ckpt[key]
      assert got.shape == expected[key].shape, key
      np.testing.assert_array_equal(got.astype(expected[key].dtype), expected[key])
  assert ckpt["bf16"].dtype == ml_dtypes.bfloat16 and ckpt["f16"].dtype == np.float16


def test_pth_and_safetensors_convert_to_the_same_state(small):
  cfg, _ = small
  _, from_pth = dit_convert.load_state(open_state_dict(os.path.join(TORCH, "dit7b.pth")), cfg)
  _, from_st = dit_convert.load_state(
      open_state_dict(os.path.join(PARITY_A, "dit7b.safetensors")), cfg)
  for a, b in zip(jax.tree.leaves(from_pth), jax.tree.leaves(from_st)):
    np.testing.assert_array_equal(a, b)


def test_bf16_checkpoint_converts_to_float32(small, tmp_path):
  cfg, sd = small
  path = str(tmp_path / "bf16.safetensors")
  save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in sd.items()}, path)
  _, state = dit_convert.load_state(open_state_dict(path), cfg)
  kernel = nnx.to_flat_state(state)
  value = dict(zip([".".join(map(str, p)) for p in kernel.paths], kernel.leaves))
  got = np.asarray(value["vid_in.proj.kernel"][...])
  want = sd["vid_in.proj.weight"].astype(ml_dtypes.bfloat16).astype(np.float32).T
  assert got.dtype == np.float32 and np.array_equal(got, want)


def test_safetensors_roundtrip_and_atomic_write(tmp_path):
  tensors = {"a": np.arange(6, dtype=np.int64).reshape(2, 3),
             "b": np.linspace(-1, 1, 5).astype(ml_dtypes.bfloat16), "c": np.float32(2.5)}
  path = str(tmp_path / "t.safetensors")
  save_file(tensors, path, metadata={"format": "np"})
  back = SafetensorsFile(path)
  assert back.metadata == {"format": "np"} and list(os.listdir(tmp_path)) == ["t.safetensors"]
  for k, v in tensors.items():
    assert back[k].dtype == np.asarray(v).dtype and np.array_equal(back[k], v)


def test_atomic_writes_replace_whole_or_leave_nothing(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "old.txt").write_text("old")
  with pytest.raises(KeyError):  # a failed write keeps what was there and leaves no temporary
    with atomic.atomic_dir(str(out)) as tmp:
      open(os.path.join(tmp, "new.txt"), "w").close()
      raise KeyError("stop")
  assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["old.txt"]
  with atomic.atomic_path(str(out)) as tmp:  # a file replaces a directory
    with open(tmp, "w") as f:
      f.write("new")
  assert out.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["out"]
  with pytest.raises(FileExistsError):
    atomic.write_text(str(out), "newer")
  atomic.write_text(str(out), "newer", overwrite=True)
  assert out.read_text() == "newer"


@pytest.mark.parametrize("name,payload,message", [
    ("trunc.safetensors", None, "truncated or corrupt"),
    ("junk.safetensors", b"\xff" * 64, "not a readable safetensors file"),
    ("junk.pth", b"not a zip at all", "not a zip-format torch checkpoint"),
    ("model.ckpt.gz", b"", "unknown checkpoint format"),
])
def test_corrupt_files_give_clear_errors(tmp_path, name, payload, message):
  path = tmp_path / name
  if payload is None:
    shutil.copy(os.path.join(PARITY_A, "dit7b.safetensors"), path)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    path.write_bytes(payload)
  with pytest.raises(CheckpointError, match=message):
    open_state_dict(str(path))


def test_missing_file_and_unsafe_pickle_are_refused(tmp_path):
  with pytest.raises(CheckpointError, match="no such checkpoint file"):
    open_state_dict(str(tmp_path / "absent.pth"))
  import pickle
  import zipfile
  evil = tmp_path / "evil.pth"
  with zipfile.ZipFile(evil, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps(os.system))
  with pytest.raises(CheckpointError, match="refusing to load global"):
    open_state_dict(str(evil))


def test_abstract_models_are_built_once_per_config_and_handed_out_as_copies():
  """Two threads asking at once (a restore's plan and its weight load) build the model once;
  each caller fills its own copy of the abstract state."""
  import threading

  builds = []

  class Counted(nnx.Module):
    def __init__(self, width, rngs):
      builds.append(width)
      self.kernel = nnx.Param(rngs.params.normal((width, 2)))

  got = []
  threads = [threading.Thread(target=lambda: got.append(nnx_map.abstract_split(Counted, 3)))
             for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert builds == [3] and got[0][0] is got[1][0]
  nnx.replace_by_pure_dict(got[0][1], {"kernel": np.ones((3, 2), np.float32)})
  for state in (got[1][1], nnx_map.abstract_split(Counted, 3)[1]):
    assert isinstance(state["kernel"].get_value(), jax.ShapeDtypeStruct)
  nnx_map.abstract_split(Counted, 4)
  assert builds == [3, 4]
