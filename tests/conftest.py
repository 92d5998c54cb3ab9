"""Test-wide settings: a fake 8-device CPU mesh and exact fp32 matmuls."""

import os

# Must happen before jax is imported anywhere, so sharding tests can build an 8-device mesh.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FROZENLAKE_DATA = SHARED / "data" / "frozenlake"


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA cache for the session, empty at its start: tests that build the same program again (another
  run of the same config, the same tiny model in another test) load it instead of compiling. About a fifth of the
  suite's time; a fresh directory keeps every session independent of the last."""
  import jax

  path = tmp_path_factory.mktemp("xla_cache")
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


@pytest.fixture(scope="session")
def shared_frozenlake_dir() -> pathlib.Path:
  """The release's map files as ../shared holds them: only to check the packaged copy against."""
  if not FROZENLAKE_DATA.is_dir():
    raise FileNotFoundError(f"shared FrozenLake data not found at {FROZENLAKE_DATA}; clone with ../shared beside")
  return FROZENLAKE_DATA


@pytest.fixture(scope="session")
def task_processor():
  """The task tokenizer's chat processor with a small image budget (56^2 .. 196^2 px)."""
  from vrrl_jax.data import processor as processor_lib
  from vrrl_jax.data.task_tokenizer import load_task_tokenizer

  cfg = processor_lib.ImageProcessorConfig.qwen2_5_vl()
  cfg = processor_lib.ImageProcessorConfig(**{**cfg.__dict__, "min_pixels": 56 * 56, "max_pixels": 196 * 196})
  return processor_lib.ChatProcessor(load_task_tokenizer(), cfg)


@pytest.fixture(scope="session")
def bench_script():
  """Loads ``bench/<name>.py`` as a module (bench/ is a folder of scripts, not a package)."""

  def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

  return load
