"""Shared pytest fixtures."""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hub_server import DEFAULT_TOKEN, FakeHub

# Settings that would send a client elsewhere, make it skip the network, or authenticate it behind the test's back.
_HUB_ENV_TO_DROP = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
)


@dataclass
class HubServer:
    """A running :class:`FakeHub` and how to point a ``huggingface_hub`` client at it."""

    hub: FakeHub
    endpoint: str
    token: str
    hf_home: Path

    def env(self) -> dict[str, str]:
        """A copy of ``os.environ`` for a client subprocess talking to this hub.

        ``huggingface_hub`` reads ``HF_ENDPOINT`` when it is imported, hence subprocesses. Xet is off because the
        fake hub only speaks LFS; ``HF_HOME`` is a per-session directory, so the cache starts empty and no stored
        token is found; a short ETag timeout makes a dead server fail fast.
        """
        env = {name: value for name, value in os.environ.items() if name not in _HUB_ENV_TO_DROP}
        # A proxy configured on the machine must not intercept requests to the local server (urllib-style
        # proxy settings honour both spellings, the lowercase one first).
        no_proxy = ",".join(filter(None, [env.get("no_proxy") or env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HOME=str(self.hf_home),
            HF_HUB_ETAG_TIMEOUT="5",
            NO_PROXY=no_proxy,
            no_proxy=no_proxy,
        )
        return env


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """An in-memory Hugging Face Hub on a free local port, shared by the whole session (use unique repo names)."""
    hub = FakeHub(tokens={DEFAULT_TOKEN})
    endpoint = hub.start()
    try:
        yield HubServer(hub=hub, endpoint=endpoint, token=DEFAULT_TOKEN, hf_home=tmp_path_factory.mktemp("hf_home"))
    finally:
        hub.stop()
