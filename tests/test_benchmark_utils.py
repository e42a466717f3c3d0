"""The benchmarks' profile summary (experiments/bench_vae.py and bench_train.py --profile)."""

from seedvr2_jax.utils.benchmark import op_times_from_trace


def _meta(pid, name):
  return {"ph": "M", "pid": pid, "name": "process_name", "args": {"name": name}}


def _kernel(pid, op, dur_us):
  return {"ph": "X", "pid": pid, "tid": 1, "ts": 0.0, "dur": dur_us, "name": "kernel",
          "args": {"hlo_op": op}}


def test_op_times_sum_device_kernels_per_op_without_suffix():
  events = [_meta(1, "/host:CPU"), _meta(2, "/device:GPU:0"), _meta(3, "/device:GPU:1"),
            _kernel(2, "cudnn-conv-bias-activation.3", 1500.0),
            _kernel(2, "cudnn-conv-bias-activation.17", 500.0),
            _kernel(3, "cudnn-conv-bias-activation", 1000.0),
            _kernel(2, "input_concatenate_fusion.2", 2500.0),
            _kernel(2, "loop_add_fusion", 250.0),
            _kernel(1, "cudnn-conv-bias-activation.1", 9e6),  # host thread: not device time
            {"ph": "X", "pid": 2, "dur": 7e6, "name": "no hlo_op", "args": {}}]
  assert op_times_from_trace(events, top=2) == {"cudnn-conv-bias-activation": 3.0,
                                                "input_concatenate_fusion": 2.5}
  assert op_times_from_trace(events, top=5)["loop_add_fusion"] == 0.25


def test_op_times_of_a_cpu_trace_are_the_host_ops():
  events = [_meta(1, "/host:CPU"), _kernel(1, "dot.2", 1500.0), _kernel(1, "dot.7", 500.0),
            _kernel(1, "ynn_fusion", 250.0)]
  assert op_times_from_trace(events, top=5) == {"dot": 2.0, "ynn_fusion": 0.25}
