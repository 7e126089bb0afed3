"""Shared test set-up: offline by default, tests/ importable, the loopback Hub fixtures, tiny models."""

import os
import sys
from pathlib import Path

# Tests never reach the real Hub: offline unless a test asks for the loopback Hub (`hub` fixture).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

from tiny_models import bpe_tokenizer, tiny_bert, tiny_gpt2, tiny_llama, wordpiece_tokenizer  # noqa: E402

pytest_plugins = ["hub_fixtures"]


@pytest.fixture(scope="session")
def bpe():
    return bpe_tokenizer()


@pytest.fixture(scope="session")
def wordpiece():
    return wordpiece_tokenizer()


@pytest.fixture
def llama(bpe):
    return tiny_llama(len(bpe))


@pytest.fixture
def gpt2(bpe):
    return tiny_gpt2(len(bpe))


@pytest.fixture
def bert(wordpiece):
    return tiny_bert(len(wordpiece))


@pytest.fixture(params=["llama", "gpt2", "bert"])
def lm_and_tokenizer(request, bpe, wordpiece):
    """Each tiny LM kind with its tokenizer: (kind, model, tokenizer)."""
    if request.param == "bert":
        return request.param, tiny_bert(len(wordpiece)), wordpiece
    factory = tiny_llama if request.param == "llama" else tiny_gpt2
    return request.param, factory(len(bpe)), bpe


def pytest_collection_modifyitems(config, items):
    """`slow` tests (1,000-example property runs) run only when selected: `pytest -m slow`."""
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: select with `pytest -m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
