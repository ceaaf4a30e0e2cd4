"""Shared test set-up (after equinox's conftest): strict rank promotion, a key fixture, fixture paths.

Dtype promotion stays "standard": optax 0.2.8's adam update mixes a Python float with
an int32 count and fails under jax_numpy_dtype_promotion="strict", so strict dtype
promotion would test a configuration no user can run.
"""

import pathlib

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

DATA = pathlib.Path(__file__).parent / "data"
NIH_FIXTURE = DATA / "nih_fixture.npz"
COVID_FIXTURE = DATA / "covid_fixture.npz"


@pytest.fixture
def getkey():
  """Returns a function giving a fresh PRNG key on each call (deterministic per test)."""
  counter = iter(range(1_000_000))
  base = jax.random.key(0)
  return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture(scope="session")
def nih_path():
  return NIH_FIXTURE


@pytest.fixture(scope="session")
def covid_path():
  return COVID_FIXTURE
