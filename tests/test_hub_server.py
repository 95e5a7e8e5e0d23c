"""The fake Hub (tests/hub_server.py) against the real huggingface_hub client and timm.

Clients run in subprocesses because huggingface_hub reads HF_ENDPOINT when it is imported. Each client script
gets its parameters as ``params`` and hands its results back with ``emit(...)``; assertions happen here.
"""

import hashlib
import json
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

_SCRIPT_PRELUDE = """\
import json, sys
params = json.loads(sys.argv[1])
def emit(result):
    print(json.dumps(result))
"""


def run_client(hub_server, script: str, timeout: float = 120, **params) -> dict:
    """Run a client script in a fresh interpreter pointed at the fake Hub; return what it ``emit``-ted."""
    code = _SCRIPT_PRELUDE + textwrap.dedent(script)
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(params)],
        env=hub_server.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, f"client script failed:\n{completed.stdout}\n{completed.stderr}"
    return json.loads(completed.stdout.strip().splitlines()[-1])


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def repo_id(request) -> str:
    """A repo name no other test of the session uses (the hub is shared)."""
    return f"growres-tests/{request.node.name.replace('_', '-')}-{secrets.token_hex(3)}"


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """A model folder with a few hundred KB of real tensors (sent through LFS) and two small text files."""
    folder = tmp_path / "model"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    tensors = {"encoder.weight": torch.randn(256, 256, generator=generator), "encoder.bias": torch.zeros(256)}
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": "toy", "hidden": 256}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Toy model\n")
    return folder


def test_upload_folder_then_download_identical_bytes(hub_server, repo_id, model_folder):
    first_request = len(hub_server.hub.requests)
    result = run_client(
        hub_server,
        """
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError

        api = HfApi(token=params["token"])
        repo_url = api.create_repo(params["repo_id"])
        again_url = api.create_repo(params["repo_id"], exist_ok=True)
        try:
            api.create_repo(params["repo_id"])
            duplicate_status = None
        except HfHubHTTPError as error:
            duplicate_status = error.response.status_code
        commit = api.upload_folder(repo_id=params["repo_id"], folder_path=params["folder"])
        # Same folder again: the preupload oids tell the client nothing changed, so no new commit.
        unchanged = api.upload_folder(repo_id=params["repo_id"], folder_path=params["folder"])
        info = api.model_info(params["repo_id"], files_metadata=True)
        emit({
            "repo_url": str(repo_url),
            "repo_url_repo_id": repo_url.repo_id,
            "again_url": str(again_url),
            "duplicate_status": duplicate_status,
            "commit_oid": commit.oid,
            "unchanged_oid": unchanged.oid,
            "info_sha": info.sha,
            "siblings": {s.rfilename: {"size": s.size, "lfs": s.lfs is not None} for s in info.siblings},
            "files": api.list_repo_files(params["repo_id"]),
            "downloads": {name: hf_hub_download(params["repo_id"], name) for name in params["names"]},
            "snapshot": snapshot_download(params["repo_id"]),
        })
        """,
        token=hub_server.token,
        repo_id=repo_id,
        folder=str(model_folder),
        names=["model.safetensors", "config.json", "README.md"],
    )

    assert result["repo_url"] == result["again_url"] == f"{hub_server.endpoint}/{repo_id}"
    assert result["repo_url_repo_id"] == repo_id
    assert result["duplicate_status"] == 409
    assert result["unchanged_oid"] == result["commit_oid"] == result["info_sha"]

    local_files = {path.name: path for path in model_folder.iterdir()}
    assert set(result["siblings"]) == {".gitattributes", *local_files}
    assert sorted(result["files"]) == sorted(result["siblings"])
    for name, path in local_files.items():
        assert result["siblings"][name] == {"size": path.stat().st_size, "lfs": name == "model.safetensors"}
        assert Path(result["downloads"][name]).read_bytes() == path.read_bytes()
        assert sha256_of(Path(result["snapshot"]) / name) == sha256_of(path)

    # Server side: the weights went through the LFS batch API and a PUT, the text files inline in the commit.
    stored = hub_server.hub.repos[repo_id].resolve("main").files
    assert stored["model.safetensors"].lfs and not stored["config.json"].lfs and not stored["README.md"].lfs
    served = hub_server.hub.requests[first_request:]
    assert ("POST", f"/{repo_id}.git/info/lfs/objects/batch") in served
    assert [path.startswith("/lfs-upload/") for method, path in served if method == "PUT"] == [True]
    assert served.count(("POST", f"/api/models/{repo_id}/commit/main")) == 1  # the second upload made no commit


def test_branch_keeps_its_own_version(hub_server, repo_id):
    # A slash in the branch name travels percent-encoded (exp%2Fv2) in every URL.
    result = run_client(
        hub_server,
        """
        from huggingface_hub import HfApi, hf_hub_download

        api, repo_id, branch = HfApi(token=params["token"]), params["repo_id"], params["branch"]
        api.create_repo(repo_id)
        main_commit = api.upload_file(path_or_fileobj=b'{"version": 1}', path_in_repo="config.json", repo_id=repo_id)
        api.create_branch(repo_id, branch=branch)
        api.create_branch(repo_id, branch=branch, exist_ok=True)
        branch_commit = api.upload_file(
            path_or_fileobj=b'{"version": 2}', path_in_repo="config.json", repo_id=repo_id, revision=branch
        )

        def read(revision):
            with open(hf_hub_download(repo_id, "config.json", revision=revision)) as file:
                return json.load(file)["version"]

        refs = api.list_repo_refs(repo_id)
        emit({
            "main": read("main"),
            "branch": read(branch),
            "main_by_commit_id": read(main_commit.oid),
            "branch_info_sha": api.model_info(repo_id, revision=branch).sha,
            "branch_commit": branch_commit.oid,
            "main_commit": main_commit.oid,
            "refs": {ref.name: ref.target_commit for ref in refs.branches},
        })
        """,
        token=hub_server.token,
        repo_id=repo_id,
        branch="exp/v2",
    )

    assert (result["main"], result["branch"], result["main_by_commit_id"]) == (1, 2, 1)
    assert result["branch_info_sha"] == result["branch_commit"] != result["main_commit"]
    assert result["refs"] == {"main": result["main_commit"], "exp/v2": result["branch_commit"]}


def test_writes_need_a_valid_token(hub_server, repo_id):
    result = run_client(
        hub_server,
        """
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        def status_of(call):
            try:
                call()
            except HfHubHTTPError as error:
                return error.response.status_code
            return "no error"

        repo_id = params["repo_id"]
        HfApi(token=params["token"]).create_repo(repo_id)
        anonymous, wrong = HfApi(token=False), HfApi(token="hf_not_a_valid_token")
        upload = {"path_or_fileobj": b"{}", "path_in_repo": "config.json", "repo_id": repo_id}
        emit({
            "anonymous_upload": status_of(lambda: anonymous.upload_file(**upload)),
            "wrong_token_upload": status_of(lambda: wrong.upload_file(**upload)),
            "anonymous_create": status_of(lambda: anonymous.create_repo(repo_id + "-other")),
            "wrong_whoami": status_of(lambda: wrong.whoami()),
            "whoami": HfApi().whoami(token=params["token"])["name"],
            "anonymous_read": anonymous.model_info(repo_id).id,
        })
        """,
        token=hub_server.token,
        repo_id=repo_id,
    )

    assert result["anonymous_upload"] == result["wrong_token_upload"] == 401
    assert result["anonymous_create"] == result["wrong_whoami"] == 401
    assert result["whoami"] == hub_server.hub.username
    assert result["anonymous_read"] == repo_id
    assert list(hub_server.hub.repos[repo_id].resolve("main").files) == [".gitattributes"]


def test_missing_repo_revision_and_file_raise_the_client_errors(hub_server, repo_id):
    result = run_client(
        hub_server,
        """
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        def error_of(call):
            try:
                call()
            except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
                return type(error).__name__
            return "no error"

        repo_id = params["repo_id"]
        api = HfApi(token=params["token"])
        api.create_repo(repo_id)
        api.create_repo(repo_id + "-private", private=True)
        emit({
            "repo": error_of(lambda: hf_hub_download(repo_id + "-missing", "config.json")),
            "revision": error_of(lambda: hf_hub_download(repo_id, "config.json", revision="no-such-branch")),
            "file": error_of(lambda: hf_hub_download(repo_id, "config.json")),
            "info_revision": error_of(lambda: api.model_info(repo_id, revision="no-such-branch")),
            "private_anonymous": error_of(lambda: HfApi(token=False).model_info(repo_id + "-private")),
            "private_with_token": api.model_info(repo_id + "-private").private,
        })
        """,
        token=hub_server.token,
        repo_id=repo_id,
    )

    assert result == {
        "repo": "RepositoryNotFoundError",
        "revision": "RevisionNotFoundError",
        "file": "RemoteEntryNotFoundError",  # the client's EntryNotFoundError for files missing on the Hub
        "info_revision": "RevisionNotFoundError",
        "private_anonymous": "RepositoryNotFoundError",
        "private_with_token": True,
    }


@pytest.mark.slow  # stock timm through this server; test_hub.py loads growres models back through hf-hub: too
def test_timm_model_round_trip(hub_server, repo_id, tmp_path):
    # Build, save and push in one process, load in a fresh one: both compute on the same saved input.
    pushed = run_client(
        hub_server,
        """
        import timm, torch
        from huggingface_hub import HfApi

        torch.manual_seed(0)
        model = timm.create_model("resnet18", num_classes=10).eval()
        timm.models.save_for_hf(model, params["folder"], safe_serialization=True)
        example = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            torch.save({"input": example, "output": model(example)}, params["reference"])
        api = HfApi(token=params["token"])
        api.create_repo(params["repo_id"])
        emit({"commit": api.upload_folder(repo_id=params["repo_id"], folder_path=params["folder"]).oid})
        """,
        token=hub_server.token,
        repo_id=repo_id,
        folder=str(tmp_path / "resnet18"),
        reference=str(tmp_path / "reference.pt"),
    )
    run_client(
        hub_server,
        """
        import timm, torch

        torch.manual_seed(1)  # a different random init, so equal outputs prove the weights were loaded
        model = timm.create_model("hf-hub:" + params["repo_id"], pretrained=True).eval()
        with torch.no_grad():
            output = model(torch.load(params["reference"])["input"])
        torch.save(output, params["loaded"])
        emit({})
        """,
        repo_id=repo_id,
        reference=str(tmp_path / "reference.pt"),
        loaded=str(tmp_path / "loaded.pt"),
    )

    reference = torch.load(tmp_path / "reference.pt")
    assert torch.equal(torch.load(tmp_path / "loaded.pt"), reference["output"])
    downloaded = {path for method, path in hub_server.hub.requests if method == "GET" and repo_id in path}
    assert f"/{repo_id}/resolve/main/config.json" in downloaded
    assert f"/{repo_id}/resolve/main/model.safetensors" in downloaded
    assert hub_server.hub.repos[repo_id].branches["main"] == pushed["commit"]
