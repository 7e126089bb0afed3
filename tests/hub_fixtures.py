"""Pytest fixtures that point huggingface_hub and transformers at the loopback Hub of ``hub_server``.

Why: environment variables alone are not enough once the libraries are imported, because
``huggingface_hub.constants`` (and a few copies of its values, such as the module-level ``HfApi`` instance and
transformers' shared ``HfApi``) are read at import time. The ``hub`` fixture patches both, for one test, and
gives the test a fresh cache. Load with ``pytest_plugins = ["hub_fixtures"]`` (tests/ on ``sys.path``).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hub_server import HubServer

__all__ = ["DUMMY_TOKEN", "HubClient", "hub", "hub_env", "hub_server"]

DUMMY_TOKEN = "hf_loopbackDummyToken"  # the loopback Hub accepts any token; this one is never sent elsewhere


def hub_env(endpoint: str, cache_dir: str | Path, offline: bool,
            home: str | Path | None = None) -> dict[str, str]:
    """Environment variables for a *subprocess* to use the loopback Hub (or, offline, only the cache).

    ``cache_dir`` is the hub cache (``HF_HUB_CACHE``); ``HF_HOME`` defaults to its parent folder.
    Merge into a copy of ``os.environ``: ``subprocess.run(..., env={**os.environ, **hub_env(...)})``.
    """
    cache_dir = Path(cache_dir)
    home = Path(home) if home is not None else cache_dir.parent
    host = urlsplit(endpoint).hostname or "127.0.0.1"
    existing = [h for h in os.environ.get("NO_PROXY", "").split(",") if h]
    no_proxy = ",".join(dict.fromkeys([*existing, host, "localhost"]))
    flag = "1" if offline else "0"
    return {
        "HF_ENDPOINT": endpoint.rstrip("/"),
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache_dir),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_MODULES_CACHE": str(home / "modules"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_TOKEN": DUMMY_TOKEN,
        "HF_HUB_OFFLINE": flag,
        "TRANSFORMERS_OFFLINE": flag,
        "HF_HUB_DISABLE_XET": "1",  # the loopback Hub has no Xet storage: upload with git-LFS
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }


@dataclass
class HubClient:
    """What the ``hub`` fixture gives a test: where the Hub is, where the cache is, and unique repo ids."""

    server: HubServer
    endpoint: str
    home: Path
    cache_dir: Path
    _counter: Iterator[int] = field(repr=False, default_factory=lambda: itertools.count(1))

    def new_repo_id(self, prefix: str = "repo") -> str:
        """A repo id not used yet on this server, e.g. ``"tester/repo-3"`` (the repo is not created)."""
        while True:
            repo_id = f"{self.server.user}/{prefix}-{next(self._counter)}"
            if not any(rid == repo_id for _, rid in self.server.store.repos):
                return repo_id

    def env(self, offline: bool = False) -> dict[str, str]:
        """``hub_env`` for this server and cache."""
        return hub_env(self.endpoint, self.cache_dir, offline, home=self.home)

    @property
    def api(self):  # -> huggingface_hub.HfApi
        """An ``HfApi`` bound to the loopback Hub."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=DUMMY_TOKEN)


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """The loopback Hub for the whole session (``.endpoint``, ``.root``), on a free port of 127.0.0.1."""
    server = HubServer(tmp_path_factory.mktemp("hub-server")).start()
    try:
        yield server
    finally:
        server.stop()


_repo_counter = itertools.count(1)


@pytest.fixture
def hub(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HubClient:
    """Point huggingface_hub and transformers at ``hub_server`` for one test, online, with a fresh cache."""
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api

    home = tmp_path / "hf_home"
    cache_dir = home / "hub"
    cache_dir.mkdir(parents=True)
    endpoint = hub_server.endpoint

    env = hub_env(endpoint, cache_dir, offline=False, home=home)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_OIDC_RESOURCE", "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE",
                "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(key, raising=False)

    # Values huggingface_hub computed from the environment at import time.
    patches = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {urlsplit(endpoint).hostname},
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache_dir),
        "HUGGINGFACE_HUB_CACHE": str(cache_dir),
        "HF_ASSETS_CACHE": env["HF_ASSETS_CACHE"],
        "HUGGINGFACE_ASSETS_CACHE": env["HF_ASSETS_CACHE"],
        "HF_XET_CACHE": env["HF_XET_CACHE"],
        "HF_TOKEN_PATH": env["HF_TOKEN_PATH"],
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(home / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(home / ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # Copies made with `from ..constants import X`, and the HfApi behind `huggingface_hub.create_repo` & co.
    for module_name, name, value in [
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", str(cache_dir)),
        ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", env["HF_ASSETS_CACHE"]),
    ]:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, name):
            monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)

    # transformers caches one HfApi (created on first use) and copies the modules cache path at import.
    try:
        import transformers.utils.hub as transformers_hub
    except ImportError:
        transformers_hub = None
    if transformers_hub is not None:
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
        for module_name in ("transformers.utils.hub", "transformers.utils",
                            "transformers.dynamic_module_utils"):
            module = sys.modules.get(module_name)
            if module is not None and "HF_MODULES_CACHE" in vars(module):
                monkeypatch.setattr(module, "HF_MODULES_CACHE", env["HF_MODULES_CACHE"])

    return HubClient(server=hub_server, endpoint=endpoint, home=home, cache_dir=cache_dir,
                     _counter=_repo_counter)
