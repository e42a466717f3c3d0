# Source this on the offline GPU machine: installs the carried wheels in .whl/ into /tmp/site,
# puts them and this repository on PYTHONPATH, and prints the versions the run will use.
#   source experiments/gpu_env.sh
# Make .whl/ beforehand on a machine with the package registry (and carry it to the GPU):
#   bash experiments/gpu_wheels.sh [--with-av]
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "wheel install failed"
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY'
import jax, flax, optax, numpy
print(f"jax {jax.__version__} flax {flax.__version__} optax {optax.__version__} "
      f"numpy {numpy.__version__} devices {jax.devices()}")
PY
