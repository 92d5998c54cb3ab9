"""Test-wide settings: a fake 8-device CPU mesh and exact fp32 matmuls."""

import os

# Must happen before jax is imported anywhere, so sharding tests can build an 8-device mesh.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FROZENLAKE_DATA = SHARED / "data" / "frozenlake"


@pytest.fixture(scope="session")
def frozenlake_data_dir() -> pathlib.Path:
    if not FROZENLAKE_DATA.is_dir():
        raise FileNotFoundError(f"shared FrozenLake data not found at {FROZENLAKE_DATA}; clone with ../shared beside")
    return FROZENLAKE_DATA
