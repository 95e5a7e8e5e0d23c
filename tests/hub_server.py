"""A small, real HTTP server speaking the part of the Hugging Face Hub API that ``huggingface_hub`` uses.

Tests start a :class:`FakeHub`, point ``HF_ENDPOINT`` at it and drive the real client against it: ``create_repo``,
``upload_folder`` / ``upload_file`` (preupload, LFS batch + PUT, NDJSON commit), branches, ``model_info``,
``list_repo_files`` / ``snapshot_download`` and ``hf_hub_download`` (HEAD + GET on ``/resolve``), which is what
``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` goes through.

Request and response shapes follow the huggingface_hub 2.4 client (``hf_api.py``, ``_commit_api.py``, ``lfs.py``,
``file_download.py``, ``utils/_http.py``). Deliberately left out: dataset/space repos, pull requests, tags, Range
requests, Xet storage (clients must run with ``HF_HUB_DISABLE_XET=1``) and multipart LFS uploads. Every accepted
token belongs to one user, who may write to any namespace.

Run ``python tests/hub_server.py --port 8123`` to use it by hand.
"""

import argparse
import base64
import hashlib
import json
import re
import secrets
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_TOKEN = "hf_test_token"
DEFAULT_BRANCH = "main"

# The Hub stores a file through LFS when .gitattributes says so, when it is large or when it looks binary.
# The initial .gitattributes of every repo lists these suffixes, so what a repo "says" and what the preupload
# endpoint decides agree.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npy", ".npz", ".pkl")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
INITIAL_GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)

_REPO_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _utc_now() -> str:
    """Timestamp in the format the Hub uses and ``huggingface_hub.utils.parse_datetime`` expects."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_oid(content: bytes) -> str:
    """The sha1 git gives a blob (``git hash-object``); the client compares it with its own for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _should_use_lfs(path: str, size: int, sample: bytes) -> bool:
    """Whether the Hub would store this file through LFS (empty files never are: S3 rejects them)."""
    return size > 0 and (path.endswith(LFS_SUFFIXES) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample)


def _is_true(value: str | None) -> bool:
    """Query-string booleans, as httpx writes them (``true``) or as people type them (``1``)."""
    return value is not None and value.lower() in ("1", "true")


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit, with the hashes the Hub reports for it (computed once, files can be large)."""

    content: bytes
    lfs: bool
    sha256: str
    git_oid: str

    @classmethod
    def create(cls, content: bytes, *, lfs: bool) -> "StoredFile":
        sha256 = hashlib.sha256(content).hexdigest()
        # In git, an LFS file is a small pointer blob; its oid is the pointer's, as on the real Hub.
        git_oid = _git_blob_oid(cls._lfs_pointer(sha256, len(content)) if lfs else content)
        return cls(content=content, lfs=lfs, sha256=sha256, git_oid=git_oid)

    @staticmethod
    def _lfs_pointer(sha256: str, size: int) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()

    @property
    def etag(self) -> str:
        """What the client uses as the blob name in its cache: sha256 for LFS files, git oid otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def lfs_info(self) -> dict:
        """The ``lfs`` block of tree listings (``RepoFile``)."""
        pointer_size = len(self._lfs_pointer(self.sha256, len(self.content)))
        return {"oid": self.sha256, "size": len(self.content), "pointerSize": pointer_size}


@dataclass
class Commit:
    commit_id: str
    parent_id: str | None
    title: str
    files: dict[str, StoredFile]
    created_at: str


class HubError(Exception):
    """An HTTP error answer: ``{"error": message, **extra}``. ``error_code`` goes into ``X-Error-Code``, which the
    client maps to its exceptions."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.extra = extra or {}


def _repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_id}", error_code="RepoNotFound")


def _nothing_to_delete(path: str) -> HubError:
    # The client looks for this wording to hint at file vs. folder deletions.
    return HubError(404, f"A file with this name doesn't exist: {path}", error_code="EntryNotFound")


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit id
    commits: dict[str, Commit] = field(default_factory=dict)  # commit id -> commit
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content uploaded through LFS

    def resolve(self, revision: str) -> Commit:
        """The commit a branch name or a full commit id points to."""
        commit = self.commits.get(self.branches.get(revision, revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        return commit

    def branch_head(self, branch: str) -> Commit:
        """The head of a branch; writes (preupload, commit) need a branch, a commit id is not enough."""
        if branch not in self.branches:
            raise HubError(404, f"Branch not found: {branch}", error_code="RevisionNotFound")
        return self.commits[self.branches[branch]]


class RequestRecord(NamedTuple):
    """A served request as tests see it in ``FakeHub.requests``: the path as sent (still percent-encoded), without
    query string or headers, so no tokens."""

    method: str
    path: str


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes

    def json(self) -> dict:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise HubError(400, f"Request body is not valid JSON: {error}") from error


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(payload, status: int = 200, content_type: str = "application/json") -> _Response:
    return _Response(status, json.dumps(payload).encode(), {"Content-Type": content_type})


class _UploadTicket(NamedTuple):
    """What the LFS batch endpoint promised to accept at one upload URL."""

    repo_id: str
    oid: str
    size: int


class FakeHub:
    """In-memory Hugging Face Hub served over HTTP on ``host:port`` (port 0 picks a free one).

    ``tokens`` are the bearer tokens accepted for writes (and for reading private repos); they all belong to
    ``username``. ``repos`` maps repo ids to :class:`Repo`; ``requests`` lists every request served.
    """

    def __init__(
        self,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        username: str = "test-user",
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ):
        self.tokens = frozenset(tokens)
        self.username = username
        self.host = host
        self.port = port
        self.verbose = verbose
        self.repos: dict[str, Repo] = {}
        self.requests: list[RequestRecord] = []
        self._upload_tickets: dict[str, _UploadTicket] = {}
        self._commit_serial = 0
        # One lock around each request: simple, and the client's few parallel LFS uploads don't need more.
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Serve in a background thread; returns the endpoint URL."""
        self._server = _HubHTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="FakeHub", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    # ----------------------------------------------------------------------------------------------- dispatch

    def handle(self, request: _Request) -> _Response:
        """Route one request to its endpoint and turn a :class:`HubError` into its HTTP answer."""
        with self._lock:
            self.requests.append(RequestRecord(request.method, request.path))
            try:
                for method, pattern, endpoint in _ROUTES:
                    match = pattern.fullmatch(request.path)
                    if match and method == request.method:
                        params = {name: unquote(value) for name, value in match.groupdict().items()}
                        return endpoint(self, request, **params)
                raise HubError(404, f"No such endpoint: {request.method} {request.path}")
            except HubError as error:
                response = _json_response({"error": error.message, **error.extra}, error.status)
                # The client reads X-Error-Message too, and tells "bad token" from "no access" by its text.
                # Header values must be latin-1; paths in messages may not be.
                header_message = error.message.encode("ascii", "backslashreplace").decode()
                response.headers.update({"X-Error-Message": header_message, **error.headers})
                if error.error_code:
                    response.headers["X-Error-Code"] = error.error_code
                return response

    # ---------------------------------------------------------------------------------------------- auth & repos

    def _authenticate(self, request: _Request) -> str | None:
        """The user behind the bearer token, or None without one. A wrong token is refused even for public reads,
        as the Hub does."""
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.username

    def _require_user(self, request: _Request) -> str:
        user = self._authenticate(request)
        if user is None:
            raise HubError(401, "You must be authenticated to do this: send 'Authorization: Bearer <token>'")
        return user

    def _readable_repo(self, request: _Request, repo_id: str) -> Repo:
        """A repo the caller may read; private repos look missing to anonymous callers, as on the Hub."""
        user = self._authenticate(request)
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            raise _repo_not_found(repo_id)
        return repo

    def _writable_repo(self, request: _Request, repo_id: str) -> Repo:
        self._require_user(request)
        if repo_id not in self.repos:
            raise _repo_not_found(repo_id)
        return self.repos[repo_id]

    def _add_commit(self, repo: Repo, parent: Commit | None, title: str, files: dict[str, StoredFile]) -> Commit:
        # A serial number keeps ids unique even for identical trees and messages.
        self._commit_serial += 1
        parent_id = parent.commit_id if parent else None
        digest_input = [parent_id, title, self._commit_serial, sorted((p, f.git_oid) for p, f in files.items())]
        commit_id = hashlib.sha1(json.dumps(digest_input).encode()).hexdigest()
        commit = Commit(commit_id, parent_id, title, files, _utc_now())
        repo.commits[commit_id] = commit
        return commit

    @staticmethod
    def _refuse_pull_requests(request: _Request) -> None:
        # Better to fail loudly than to commit to the branch when the caller asked for a PR.
        if _is_true(request.query.get("create_pr")):
            raise HubError(400, "FakeHub does not support pull requests (create_pr)")

    # --------------------------------------------------------------------------------------------- endpoints

    def _whoami(self, request: _Request) -> _Response:
        """``GET /api/whoami-v2``: who the bearer token belongs to (``HfApi.whoami``)."""
        user = self._require_user(request)
        return _json_response(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
            }
        )

    def _create_repo(self, request: _Request) -> _Response:
        """``POST /api/repos/create``: create a model repo whose ``main`` holds an initial ``.gitattributes``.

        Answers 409 when the repo exists; ``create_repo(exist_ok=True)`` accepts exactly that.
        """
        user = self._require_user(request)
        payload = request.json()
        if payload.get("type", "model") != "model":
            raise HubError(400, "FakeHub only hosts model repos")
        name, namespace = payload.get("name"), payload.get("organization") or user
        for part in (namespace, name):
            if not isinstance(part, str) or not _REPO_NAME_RE.fullmatch(part):
                raise HubError(400, f"Invalid repo name or namespace: {part!r}")
        repo_id, url = f"{namespace}/{name}", f"{self.endpoint}/{namespace}/{name}"
        if repo_id in self.repos:
            # The client reads `url` from this error body too: create_repo(exist_ok=True) returns it.
            raise HubError(409, f"You already created this model repo: {repo_id}", extra={"url": url})
        # Clients before huggingface_hub 1.x send `private`, newer ones `visibility`.
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo = Repo(repo_id=repo_id, private=private, created_at=_utc_now())
        initial_files = {".gitattributes": StoredFile.create(INITIAL_GITATTRIBUTES.encode(), lfs=False)}
        repo.branches[DEFAULT_BRANCH] = self._add_commit(repo, None, "initial commit", initial_files).commit_id
        self.repos[repo_id] = repo
        return _json_response({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, request: _Request) -> _Response:
        """``POST /api/validate-yaml``: the client checks a README's metadata before committing it; all is fine."""
        return _json_response({"errors": [], "warnings": []})

    def _model_info(self, request: _Request, namespace: str, name: str, revision: str = DEFAULT_BRANCH) -> _Response:
        """``GET /api/models/{repo}[/revision/{rev}]``: ``model_info`` / ``repo_info``; ``?blobs=true`` adds sizes."""
        repo = self._readable_repo(request, f"{namespace}/{name}")
        commit = repo.resolve(revision)
        with_blobs = _is_true(request.query.get("blobs"))
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update(size=len(stored.content), blobId=stored.git_oid)
                if stored.lfs:
                    info = stored.lfs_info()
                    sibling["lfs"] = {"size": info["size"], "sha256": info["oid"], "pointerSize": info["pointerSize"]}
            siblings.append(sibling)
        return _json_response(
            {
                "_id": repo.repo_id,
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": namespace,
                "sha": commit.commit_id,
                "lastModified": commit.created_at,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
        )

    def _list_refs(self, request: _Request, namespace: str, name: str) -> _Response:
        """``GET /api/models/{repo}/refs``: ``list_repo_refs`` (branches only; no tags, converts or PRs here)."""
        repo = self._readable_repo(request, f"{namespace}/{name}")
        branches = [
            {"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": commit_id}
            for branch, commit_id in sorted(repo.branches.items())
        ]
        return _json_response({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _list_tree(self, request: _Request, namespace: str, name: str, revision: str, path: str = "") -> _Response:
        """``GET /api/models/{repo}/tree/{rev}[/{path}]``: ``list_repo_tree`` / ``list_repo_files`` and
        ``snapshot_download``. One page holds everything, so there is no ``Link`` header to follow."""
        commit = self._readable_repo(request, f"{namespace}/{name}").resolve(revision)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        recursive = _is_true(request.query.get("recursive"))
        files: dict[str, StoredFile] = {}
        folders: dict[str, list[str]] = {}  # folder path -> git oids beneath it, to give it a stable oid
        for file_path, stored in commit.files.items():
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for level in range(1, min(depth, len(parts) - 1) + 1):
                folders.setdefault(prefix + "/".join(parts[:level]), []).append(stored.git_oid)
            if recursive or len(parts) == 1:
                files[file_path] = stored
        if prefix and not (files or folders):
            raise HubError(404, f"Folder not found: {path}", error_code="EntryNotFound")
        entries = []
        for folder, oids in sorted(folders.items()):
            folder_oid = hashlib.sha1("".join(sorted(oids)).encode()).hexdigest()
            entries.append({"type": "directory", "oid": folder_oid, "size": 0, "path": folder})
        for file_path, stored in sorted(files.items()):
            entry = {"type": "file", "oid": stored.git_oid, "size": len(stored.content), "path": file_path}
            if stored.lfs:
                entry["lfs"] = stored.lfs_info()
            entries.append(entry)
        return _json_response(entries)

    def _preupload(self, request: _Request, namespace: str, name: str, revision: str) -> _Response:
        """``POST /api/models/{repo}/preupload/{rev}``: tell the client, per file, whether to send it inline in the
        commit ("regular") or through LFS first, and the oid it already has on the branch so unchanged files are
        skipped (git oid for regular files, sha256 for LFS files, matching the client's own hashes)."""
        repo = self._writable_repo(request, f"{namespace}/{name}")
        self._refuse_pull_requests(request)
        head = repo.branch_head(revision)
        answers = []
        for entry in request.json().get("files", []):
            path = entry["path"]
            sample = base64.b64decode(entry.get("sample", ""))
            answer = {"path": path, "shouldIgnore": False}
            answer["uploadMode"] = "lfs" if _should_use_lfs(path, entry["size"], sample) else "regular"
            existing = head.files.get(path)
            if existing is not None:
                answer["oid"] = existing.sha256 if existing.lfs else existing.git_oid
            answers.append(answer)
        return _json_response({"files": answers, "commitOid": head.commit_id})

    def _lfs_batch(self, request: _Request, namespace: str, name_git: str) -> _Response:
        """``POST /{repo}.git/info/lfs/objects/batch``: the git-lfs batch API, uploads only.

        Objects the repo already has get no ``actions`` (the client then skips them); the others get a one-use
        upload URL on this server. Like the presigned S3 URLs of the real Hub, that URL is the credential: the
        client sends the PUT without an Authorization header.
        """
        if not name_git.endswith(".git"):
            raise HubError(404, f"No such endpoint: {request.method} {request.path}")
        repo = self._writable_repo(request, f"{namespace}/{name_git.removesuffix('.git')}")
        payload = request.json()
        if payload.get("operation") != "upload":
            raise HubError(422, "FakeHub only supports LFS uploads; download files through /resolve")
        objects = []
        for item in payload.get("objects", []):
            oid, size = item.get("oid"), item.get("size")
            answer = {"oid": oid, "size": size}
            if not (isinstance(oid, str) and _SHA256_RE.fullmatch(oid) and isinstance(size, int) and size >= 0):
                answer["error"] = {"code": 422, "message": "expected a sha256 oid and a size in bytes"}
            elif oid not in repo.lfs_objects:
                ticket = secrets.token_urlsafe(16)
                self._upload_tickets[ticket] = _UploadTicket(repo.repo_id, oid, size)
                upload_url = f"{self.endpoint}/lfs-upload/{ticket}"
                answer.update(authenticated=True, actions={"upload": {"href": upload_url, "expires_in": 3600}})
            objects.append(answer)
        return _json_response(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_upload(self, request: _Request, ticket: str) -> _Response:
        """``PUT /lfs-upload/{ticket}``: receive the bytes of one LFS object announced to the batch endpoint,
        checking them against the announced size and sha256."""
        upload = self._upload_tickets.get(ticket)
        if upload is None:
            raise HubError(403, "Unknown or already used upload URL")
        if len(request.body) != upload.size or hashlib.sha256(request.body).hexdigest() != upload.oid:
            raise HubError(400, f"Uploaded content does not match the announced sha256 {upload.oid} / size")
        del self._upload_tickets[ticket]
        self.repos[upload.repo_id].lfs_objects[upload.oid] = request.body
        return _Response(200)

    def _commit(self, request: _Request, namespace: str, name: str, revision: str) -> _Response:
        """``POST /api/models/{repo}/commit/{rev}``: apply an NDJSON commit to a branch.

        The first line is the header (``summary``, optional ``parentCommit``); then ``file`` (inline content),
        ``lfsFile`` (an object uploaded through LFS before), ``deletedFile`` and ``deletedFolder`` lines.
        """
        repo = self._writable_repo(request, f"{namespace}/{name}")
        self._refuse_pull_requests(request)
        head = repo.branch_head(revision)
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except ValueError as error:
            raise HubError(400, f"Commit payload is not valid NDJSON: {error}") from error
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a header line")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head.commit_id):
            raise HubError(412, "A commit has happened since the parent commit. Please refresh and try again.")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file":
                raw = value["content"]
                content = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                files[path] = StoredFile.create(content, lfs=False)
            elif key == "lfsFile":
                content = repo.lfs_objects.get(value["oid"])
                if content is None or value.get("size", len(content)) != len(content):
                    raise HubError(
                        400, f"LFS object {value['oid']} for '{path}' was not uploaded (or has another size)"
                    )
                files[path] = StoredFile.create(content, lfs=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise _nothing_to_delete(path)
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                doomed = [file_path for file_path in files if file_path.startswith(folder)]
                if not doomed:
                    raise _nothing_to_delete(path)
                for file_path in doomed:
                    del files[file_path]
            else:
                raise HubError(400, f"Unsupported commit operation: {key}")
        commit = self._add_commit(repo, head, header.get("summary", ""), files)
        repo.branches[revision] = commit.commit_id
        commit_url = f"{self.endpoint}/{repo.repo_id}/commit/{commit.commit_id}"
        return _json_response({"success": True, "commitOid": commit.commit_id, "commitUrl": commit_url})

    def _create_branch(self, request: _Request, namespace: str, name: str, branch: str) -> _Response:
        """``POST /api/models/{repo}/branch/{branch}``: branch off ``startingPoint`` (default: ``main``);
        409 when it exists, which ``create_branch(exist_ok=True)`` swallows."""
        repo = self._writable_repo(request, f"{namespace}/{name}")
        if branch in repo.branches:
            raise HubError(409, f"Branch already exists: {branch}")
        starting_point = request.json().get("startingPoint") or DEFAULT_BRANCH
        repo.branches[branch] = repo.resolve(starting_point).commit_id
        return _json_response({})

    def _delete_branch(self, request: _Request, namespace: str, name: str, branch: str) -> _Response:
        """``DELETE /api/models/{repo}/branch/{branch}``: ``delete_branch``; the default branch stays."""
        repo = self._writable_repo(request, f"{namespace}/{name}")
        if branch == DEFAULT_BRANCH:
            raise HubError(403, "The default branch cannot be deleted")
        if repo.branches.pop(branch, None) is None:
            raise HubError(404, f"Branch not found: {branch}", error_code="RevisionNotFound")
        return _json_response({})

    def _resolve(self, request: _Request, namespace: str, name: str, revision: str, path: str) -> _Response:
        """``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: ``hf_hub_download``'s metadata call and download.

        The client needs ``X-Repo-Commit`` and an ``ETag`` (it refuses files without them); for LFS files it
        prefers ``X-Linked-Etag`` / ``X-Linked-Size``. A missing file still reports the commit, which lets the
        client cache the miss.
        """
        commit = self._readable_repo(request, f"{namespace}/{name}").resolve(revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(
                404, f"Entry not found: {path}", error_code="EntryNotFound", headers={"X-Repo-Commit": commit.commit_id}
            )
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.commit_id,
            "ETag": f'"{stored.etag}"',
        }
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(len(stored.content))})
        return _Response(200, stored.content, headers)


def _compile_route(pattern: str) -> re.Pattern:
    """``{name}`` matches one path segment (still percent-encoded, so ``refs%2Fpr%2F1`` is one segment),
    ``{name*}`` the rest of the path."""
    regex = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", pattern)
    return re.compile("/" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex))


_REPO = "api/models/{namespace}/{name}"
_ROUTES: list[tuple[str, re.Pattern, Callable[..., _Response]]] = [
    (method, _compile_route(pattern), endpoint)
    for method, pattern, endpoint in [
        ("GET", "api/whoami-v2", FakeHub._whoami),
        ("POST", "api/repos/create", FakeHub._create_repo),
        ("POST", "api/validate-yaml", FakeHub._validate_yaml),
        ("GET", _REPO, FakeHub._model_info),
        ("GET", _REPO + "/revision/{revision}", FakeHub._model_info),
        ("GET", _REPO + "/refs", FakeHub._list_refs),
        ("GET", _REPO + "/tree/{revision}", FakeHub._list_tree),
        ("GET", _REPO + "/tree/{revision}/{path*}", FakeHub._list_tree),
        ("POST", _REPO + "/preupload/{revision}", FakeHub._preupload),
        ("POST", _REPO + "/commit/{revision}", FakeHub._commit),
        ("POST", _REPO + "/branch/{branch}", FakeHub._create_branch),
        ("DELETE", _REPO + "/branch/{branch}", FakeHub._delete_branch),
        ("POST", "{namespace}/{name_git}/info/lfs/objects/batch", FakeHub._lfs_batch),
        ("PUT", "lfs-upload/{ticket}", FakeHub._lfs_upload),
        ("HEAD", "{namespace}/{name}/resolve/{revision}/{path*}", FakeHub._resolve),
        ("GET", "{namespace}/{name}/resolve/{revision}/{path*}", FakeHub._resolve),
    ]
]


class _HubRequestHandler(BaseHTTPRequestHandler):
    """HTTP plumbing: read the request, let the hub answer it, write the answer."""

    # HTTP/1.1 keeps connections alive, which httpx relies on; every answer therefore carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server: "_HubHTTPServer"

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # huggingface_hub always sends a length; refusing is simpler than decoding chunks nobody sends.
            self.send_error(411, "Send a Content-Length")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        request = _Request(self.command, url.path, query, self.headers, body)
        try:
            response = self.server.hub.handle(request)
        except Exception:  # a bug in FakeHub: answer like a broken server, and show why in the test output
            traceback.print_exc()
            response = _json_response({"error": "FakeHub internal error"}, 500)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args) -> None:
        if self.server.hub.verbose:
            super().log_message(format, *args)


class _HubHTTPServer(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], hub: FakeHub):
        super().__init__(address, _HubRequestHandler)
        self.hub = hub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an in-memory fake Hugging Face Hub.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", action="append", help=f"accepted token, repeatable (default: {DEFAULT_TOKEN})")
    parser.add_argument("--username", default="test-user")
    args = parser.parse_args(argv)
    hub = FakeHub(
        tokens=args.token or [DEFAULT_TOKEN], username=args.username, host=args.host, port=args.port, verbose=True
    )
    endpoint = hub.start()
    print(f"FakeHub serving on {endpoint}; use HF_ENDPOINT={endpoint} HF_HUB_DISABLE_XET=1. Ctrl-C stops.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


if __name__ == "__main__":
    main()
