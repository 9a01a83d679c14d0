"""Shared fixtures: tiny checkpoints built once per session (see tests/tiny_models.py)."""

from __future__ import annotations

import pytest
from tiny_models import save_checkpoint, save_trainer_run


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A tiny random GPT-2 checkpoint directory (3 blocks, width 32) with a tokenizer."""
    return save_checkpoint(tmp_path_factory.mktemp("gpt2") / "model", "gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama checkpoint directory (3 blocks, width 32) with a tokenizer."""
    return save_checkpoint(tmp_path_factory.mktemp("llama") / "model", "llama")


@pytest.fixture(scope="session")
def tiny_trainer_run(tmp_path_factory):
    """Three tiny GPT-2 checkpoints in Trainer layout: checkpoint-10/20/30."""
    return save_trainer_run(tmp_path_factory.mktemp("run") / "ckpt", "gpt2")
