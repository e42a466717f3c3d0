"""Restore as separate stage programs (encode, DiT, decode chunk by chunk): outputs equal the
whole restoration in one program bit for bit, offloaded weights equal resident ones and sit in
host memory, and frames stream out before a clip's last chunk is decoded."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seedvr2_jax.infer import clips, one_step, preprocess, restore
from seedvr2_jax.infer.options import RestoreOptions

SIZE = (18, 30)  # odd against /16: padded to 32x32 and cropped back


@pytest.fixture(scope="module")
def models(restore_models):
  return restore_models


def _options(**kwargs):
  return RestoreOptions(cache_dir="", resolution=SIZE, **kwargs)


def _reference(models, options):
  """The whole restoration of a batch of raw clips as one jitted program of the pure functions
  (the single program `restore` ran before its stages were separate)."""
  dit, vae, txt = models
  (dit_graph, dit_state), (vae_graph, vae_state) = nnx.split(dit), nnx.split(vae)

  @jax.jit
  def run(dit_state, vae_state, raw, keys):
    dit_, vae_ = nnx.merge(dit_graph, dit_state), nnx.merge(vae_graph, vae_state)
    lq = jax.vmap(lambda c: preprocess.preprocess(c / 255.0, SIZE, options.size_mode))(raw)
    shape = one_step.latent_shape(vae_, lq.shape)[1:]
    eps, noise = jax.vmap(lambda key: tuple(
        jax.random.normal(k, shape, jnp.float32) for k in jax.random.split(key)))(keys)
    txt_b = jnp.broadcast_to(jnp.asarray(txt), (lq.shape[0], *txt.shape))
    out = one_step.restore_clip(dit_, vae_, lq, txt_b, eps, noise, options)
    top, left, _, _ = preprocess.pad_box(*SIZE)
    return out[:, :, top:top + SIZE[0], left:left + SIZE[1]]

  return lambda raw, keys: np.asarray(run(dit_state, vae_state, raw, keys))


def _raw(frames, batch=1, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, frames, 23, 37, 3), np.uint8)


@pytest.mark.parametrize("frames, decode_chunk, batch, tile", [
    (6, 2, 2, None), (9, None, 1, None), (6, 1, 1, (16, 24))], ids=["chunks", "one", "tiles"])
def test_stages_equal_one_program(models, frames, decode_chunk, batch, tile):
  """Chunks of 1 and 2 latent frames (the last one partly padding) and one chunk; with tiles
  (2 x 2 of the padded 32x32 frame) the decode is one program per clip, tile-major inside."""
  options = _options(decode_chunk=decode_chunk, tile=tile, tile_overlap=8)
  restorer = one_step.Restorer(*models, options, SIZE)
  raw, keys = _raw(frames, batch), jax.random.split(jax.random.key(1), batch)
  chunks = list(restorer.stream(raw, keys))
  latents = 1 + (preprocess.padded_length(frames) - 1) // 4
  if tile is not None:
    assert len(chunks) == 1
  else:
    assert len(chunks) == len(one_step.decode_ranges(latents, decode_chunk)) > 1 or not decode_chunk
  out = np.concatenate([np.asarray(c) for c in chunks], axis=1)
  assert out.shape == (batch, frames, *SIZE, 3)
  np.testing.assert_array_equal(out, _reference(models, options)(raw, keys))


def test_offloaded_clips_stream_and_equal_one_program(models, monkeypatch):
  """Clips cross-faded over an overlap: offload "stages" equals "none" and the one-program
  reference exactly, its weights sit in pinned host memory, and the first frames reach the
  consumer before the first clip's last decode chunk is dispatched."""
  frames = list(_raw(12)[0])
  plan = clips.plan_clips(12, 9, 4)  # 2 clips of 9 frames: 3 latent frames, 3 decode chunks
  options = _options(offload="stages")
  session = restore.Session(models, mesh=None)
  restorer = session.restorer(SIZE, options)
  dispatches, seen = [0], []

  def counted(program):
    def run(*args):
      dispatches[0] += 1
      return program(*args)
    return run

  programs = restorer.programs
  monkeypatch.setattr(restorer, "programs", lambda *a: dataclasses.replace(
      programs(*a), decode=tuple((r, counted(p)) for r, p in programs(*a).decode)))
  for frame in restore.restore_frames(session, iter(frames), plan, SIZE, options):
    seen.append((dispatches[0], frame))
  assert seen[0][0] < 3 and len(seen) == 12
  offloaded = np.stack([frame for _, frame in seen])
  for stage in one_step.STAGES:
    kinds = {x.sharding.memory_kind for x in jax.tree.leaves(restorer.weights.states[stage])}
    assert kinds == {"pinned_host"}, stage

  resident = np.stack(list(restore.restore_frames(session, iter(frames), plan, SIZE,
                                                  _options())))
  np.testing.assert_array_equal(offloaded, resident)
  reference = _reference(models, options)
  key = jax.random.key(options.seed)
  whole_clips = lambda indices, batch: [reference(
      np.stack(batch), jnp.stack([jax.random.fold_in(key, i) for i in indices]))]
  np.testing.assert_array_equal(
      offloaded, np.stack(list(clips.stream_clips(iter(frames), plan, whole_clips))))

  # Memory estimates per stage: with offload only the stage's own weights are on the device.
  monkeypatch.undo()
  shape = (1, 9, 23, 37, 3)
  for mem in restorer.memory(shape):
    assert mem.weights == mem.stage_weights > 0 and mem.arguments >= mem.stage_weights
    assert mem.temporaries > 0
    assert mem.outputs == 0 if mem.stage == "dit" else mem.outputs > 0  # x0 in the latent's buffer
  # Held past their programs: the raw clip (uint8), and during the DiT the encode's float32
  # frames, padded to 32x32, that the decode takes.
  raw_bytes, lq_bytes = np.prod(shape), 9 * 32 * 32 * 3 * 4
  assert [m.held for m in restorer.memory(shape)] == [0, raw_bytes + lq_bytes, raw_bytes]
  everything = sum(m.stage_weights for m in restorer.memory(shape))
  assert all(m.weights == everything for m in session.restorer(SIZE, _options()).memory(shape))


def test_weights_the_budget_cannot_hold_are_read_straight_into_host_memory(monkeypatch):
  """A checkpoint's weights beyond the memory budget (the bundled toy's 62 MB against 10 MB)
  are read from the checkpoint into pinned host memory, never whole on the device, and equal
  the device-read ones; within the budget they are read onto the device."""
  from seedvr2_jax.convert import bundle
  reads, load = [], bundle.load
  monkeypatch.setattr(bundle, "load", lambda *a, **k: reads.append(k["sharding"]) or load(*a, **k))
  state = lambda session: jax.tree.leaves((nnx.state(session.dit), nnx.state(session.vae)))
  on_host = state(restore.load_session(RestoreOptions(memory_budget=0.01), log=print))
  on_device = state(restore.load_session(RestoreOptions(memory_budget=1.0), log=print))
  assert reads[0].memory_kind == "pinned_host" and reads[1] is None
  assert {x.sharding.memory_kind for x in on_host} == {"pinned_host"}
  assert {x.sharding.memory_kind for x in on_device} == {"device"}
  for a, b in zip(on_host, on_device):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_quantised_dit_weights_run_in_the_stage_programs(models):
  """`load_session` quantises the DiT's block kernels (`dit_weights`); the DiT stage takes them
  as they are, offloaded to pinned host memory like every other weight, with the resident
  output."""
  options = _options(dit_weights="int8", offload="stages")
  session = restore.load_session(options, log=lambda line: None, models=models)
  loaded = jax.tree.leaves(nnx.state(session.dit)) + jax.tree.leaves(nnx.state(session.vae))
  assert {x.sharding.memory_kind for x in loaded} == {"pinned_host"}  # no resident device copy
  restorer = session.restorer(SIZE, options)
  leaves = jax.tree.leaves(restorer.weights.states["dit"])
  assert np.dtype(np.int8) in {x.dtype for x in leaves}
  assert {x.sharding.memory_kind for x in leaves} == {"pinned_host"}
  raw, keys = _raw(5), jax.random.split(jax.random.key(1), 1)
  resident = session.restorer(SIZE, dataclasses.replace(options, offload="none"))
  np.testing.assert_array_equal(np.asarray(restorer(raw, keys)),
                                np.asarray(resident(raw, keys)))


def test_streamed_blocks_equal_resident_weights(models):
  """offload "blocks": the DiT program takes its blocks in pinned host memory and moves them in
  one scan step at a time, its other weights on the device; the restoration equals offload
  "none", and the DiT's estimate counts only the non-block weights on the device (estimated on
  the models' shapes alone)."""
  session = restore.Session(models, mesh=None)
  streamed = session.restorer(SIZE, _options(offload="blocks"))
  kinds = {x.sharding.memory_kind for x in jax.tree.leaves(streamed.weights.on_device("dit"))}
  assert kinds == {"device", "pinned_host"}
  raw, keys = _raw(5), jax.random.split(jax.random.key(1), 1)
  resident = session.restorer(SIZE, _options())
  np.testing.assert_array_equal(np.asarray(streamed(raw, keys)), np.asarray(resident(raw, keys)))

  shape = (1, 5, 23, 37, 3)
  dit = {offload: session.estimator(SIZE, _options(offload=offload)).memory(
      shape, stages=("dit",))[0] for offload in ("stages", "blocks")}
  assert 0 < dit["blocks"].stage_weights < dit["stages"].stage_weights
  assert dit["blocks"].arguments - dit["blocks"].stage_weights == (
      dit["stages"].arguments - dit["stages"].stage_weights)


def test_dit_reuses_the_latent_buffer_and_offloaded_stages_take_turns(models, tmp_path,
                                                                      monkeypatch):
  """The DiT program writes x0 into the condition latent's buffer (donated, also by a program
  loaded from the store), so x0 sits where the encode put the latent, not above the DiT's
  weights. With offloaded weights, a stage's weights are placed only after the previous
  stage's outputs are computed, and the next clip's after this clip's last frames: one stage's
  weights and work on the device at a time, as the memory plan counts them."""
  raw, keys = _raw(5), jax.random.split(jax.random.key(1), 1)
  stored = dataclasses.replace(_options(), cache_dir=str(tmp_path))
  one_step.Restorer(*models, stored, SIZE).programs(raw.shape)
  loaded = one_step.Restorer(*models, stored, SIZE)
  programs = loaded.programs(raw.shape)
  assert loaded.store.loaded == 2 + len(programs.decode) and loaded.store.compiled == 0
  _, latent = programs.encode(loaded.weights.on_device("encode"), jnp.asarray(raw), keys)
  x0 = programs.dit(loaded.weights.on_device("dit"), latent, keys)
  assert latent.is_deleted() and x0.shape == latent.shape

  events, placed = [], []
  wait = jax.block_until_ready
  monkeypatch.setattr(jax, "block_until_ready", lambda x: events.append("wait") or wait(x))

  def recorded(on_device):
    def place(stage):
      events.append(stage)
      placed.append(on_device(stage))
      return placed[-1]
    return place

  for offload, expected in (("stages", ["encode", "wait", "dit", "wait", "decode", "wait"]),
                            ("none", ["encode", "dit", "decode"])):
    restorer = one_step.Restorer(*models, _options(offload=offload, decode_chunk=1), SIZE)
    monkeypatch.setattr(restorer.weights, "on_device", recorded(restorer.weights.on_device))
    events.clear(), placed.clear()
    chunks = list(restorer.stream(raw, keys))
    assert len(chunks) > 1 and events == expected, (offload, events)
    # Offloaded: every device copy is freed once its stage has run; resident weights stay.
    deleted = {x.is_deleted() for x in jax.tree.leaves(placed)}
    assert deleted == {offload == "stages"}, (offload, deleted)
    assert not any(x.is_deleted() for x in jax.tree.leaves(restorer.weights.states))


def test_stage_programs_are_shared_by_options_the_stage_does_not_read(models):
  """A stage's program is compiled once for options that differ only where it does not read
  them (the memory planner's candidates): a VAE tile changes the encode and decode programs,
  not the DiT's; offload "stages" changes none of them, "blocks" only the DiT's; the colour fix
  only the decode's. Each shared program restores what its own compile restores."""
  session = restore.Session(models, mesh=None)
  shape = (1, 5, 23, 37, 3)
  programs = lambda **kw: session.estimator(SIZE, _options(**kw)).programs(shape)
  base = programs()
  kinds = dict(tiled=programs(tile=(16, 24), tile_overlap=8), staged=programs(offload="stages"),
               streamed=programs(offload="blocks"), adain=programs(colorfix="adain"))
  same = lambda a, b: (a.encode is b.encode, a.dit is b.dit,
                       all(p is q for (_, p), (_, q) in zip(a.decode, b.decode)))
  assert same(kinds["tiled"], base) == (False, True, False)
  assert same(kinds["staged"], base) == (True, True, True)
  assert same(kinds["streamed"], base) == (True, False, True)
  assert same(kinds["adain"], base) == (True, True, False)

  raw, keys = _raw(5), jax.random.split(jax.random.key(1), 1)
  tiled = _options(tile=(16, 24), tile_overlap=8, offload="stages")
  shared = session.restorer(SIZE, tiled)  # every program compiled before, for other options
  np.testing.assert_array_equal(np.asarray(shared(raw, keys)),
                                _reference(models, tiled)(raw, keys))
