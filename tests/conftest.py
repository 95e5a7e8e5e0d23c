"""Shared pytest fixtures."""

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hub_server import DEFAULT_TOKEN, FakeHub

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: N workers share the cores, one thread each
    torch.set_num_threads(1)

# torch.compile's on-disk cache (inductor, torch 2.14) is not keyed by the CPU capability: code compiled under the
# machine's own kernels is reused under ATEN_CPU_CAPABILITY=avx2 (NaN outputs) or default (C++ compile errors), and
# back. So each capability gets a cache of its own (in this process and the runs it starts), unless one is set.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    try:
        _user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        _user = f"uid_{os.getuid()}"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"torchinductor_{_user}_{torch.backends.cpu.get_cpu_capability().lower()}")

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


# -- training runs ------------------------------------------------------------------------------------

FASHION_MNIST_AVAILABLE = Path("/usr/share/datasets/fashion-mnist").is_dir()
needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_AVAILABLE, reason="needs the Debian package dataset-fashion-mnist (bash .ci/run installs it)"
)

# A short real run: growres_resnet50i on 600 Fashion-MNIST images, three cycles of one epoch each.
TINY_RUN_ARGS = [
    "--model", "growres_resnet50i", "--epochs", "3", "--cycles", "1,2", "--max-train-samples", "600",
    "--max-eval-samples", "300", "--batch-size", "50", "--lr-max", "0.1", "--seed", "1",
]


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test session's temporary folder: under pytest-xdist, the one above each worker's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def growres_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for growres subprocesses: one data cache per test session, one thread per process."""
    cache = tmp_path_factory.mktemp("growres-cache")  # per xdist worker: a cache is written by one process
    if FASHION_MNIST_AVAILABLE:  # except Fashion-MNIST's conversion: made once per session, read by every worker
        from growres.data import _FASHION_MNIST_CACHE, load_image_data

        shared = session_folder(tmp_path_factory) / "fashion-mnist-cache"
        with FileLock(f"{shared}.lock"):
            load_image_data("fashion-mnist", max_train_samples=1, max_eval_samples=1, cache_dir=shared)
        (cache / _FASHION_MNIST_CACHE).symlink_to(shared / _FASHION_MNIST_CACHE)
    return dict(os.environ, GROWRES_CACHE=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1")


def run_growres(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the ``growres`` command line in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "growres", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, growres_env) -> Path:
    """A finished run folder of TINY_RUN_ARGS, with a checkpoint every 6 steps (shared, read-only).

    Trained once per test session: under pytest-xdist the first worker to ask trains it in the folder all workers
    share, and the others wait for it (a lock, and a marker file written once the run is whole)."""
    if not FASHION_MNIST_AVAILABLE:
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    shared = session_folder(tmp_path_factory)
    run_dir, done = shared / "tiny-run", shared / "tiny-run.done"
    with FileLock(str(shared / "tiny-run.lock")):
        if not done.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            result = run_growres("train", *TINY_RUN_ARGS, "--checkpoint-every", "6", "--output-dir", str(run_dir),
                                 env=growres_env)
            assert result.returncode == 0, result.stderr[-3000:]
            done.touch()
    return run_dir


@pytest.fixture
def in_process_env(growres_env, monkeypatch, capsys):
    """growres_env for `growres` called in this process (growres.cli.main), with Fashion-MNIST already converted
    into its cache: the first conversion's progress bars (tqdm reads TQDM_DISABLE at import, too late here) are
    not part of any error a test reads."""
    for name in ("GROWRES_CACHE", "OMP_NUM_THREADS", "HF_DATASETS_OFFLINE", "TQDM_DISABLE"):
        monkeypatch.setenv(name, growres_env[name])
    if FASHION_MNIST_AVAILABLE:  # converted by growres_env; the first load's own output
        from growres.data import load_image_data

        load_image_data("fashion-mnist", max_train_samples=1, max_eval_samples=1,
                        cache_dir=growres_env["GROWRES_CACHE"])
        capsys.readouterr()
