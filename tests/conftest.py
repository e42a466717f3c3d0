"""Shared test helpers: the bundled parity fixture and small model builders."""

import json
import os

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PARITY_A = os.path.join(FIXTURES, "parity_a")


@pytest.fixture(scope="session")
def parity_config():
  with open(os.path.join(PARITY_A, "config.json")) as f:
    return json.load(f)


@pytest.fixture(scope="session")
def dit_io():
  with np.load(os.path.join(PARITY_A, "dit3b_io.npz")) as data:
    return dict(data)
