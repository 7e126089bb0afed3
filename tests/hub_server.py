"""A loopback, Hub-API-compatible HTTP server for tests.

Why: tests should exercise the *real* ``huggingface_hub`` client (and ``transformers``' ``push_to_hub`` /
``from_pretrained``) over HTTP instead of mocking it, without ever contacting huggingface.co. This module
implements the subset of the Hub API that ``huggingface_hub`` 2.x uses for model (and dataset/space) repos:
repo creation/info, preupload + NDJSON commits, the git-LFS batch API with the "basic" transfer (PUT to this
server), tree listing (paginated), refs, commits, paths-info and ``/resolve`` downloads (HEAD/GET, Range).

Xet: with ``hf_xet`` installed, ``huggingface_hub`` uploads through Xet storage unconditionally (there is no
server-side negotiation), and Xet's CAS protocol is out of scope here. Clients must set
``HF_HUB_DISABLE_XET=1`` (the ``hub`` fixture does); the Xet token endpoints answer 501 saying so.
Downloads never use Xet because responses carry no Xet headers.

Standard library only; ``HubServer(root).start()`` can also be used outside pytest.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit

DEFAULT_USER = "tester"
LFS_THRESHOLD = 10 * 1024 * 1024  # files this large always go through LFS, like on the Hub
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gguf *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack"
        " *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors"
        " saved_model/**/* *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
    ).split()
)
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO = r"(?P<repo>[^/]+/[^/]+)"


class HubError(Exception):
    """An HTTP error answered as ``{"error": message}`` plus the ``X-Error-Code`` the client maps."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.extra = status, message, code, commit, extra


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _git_oid(data: bytes) -> str:
    """The git blob sha1 of ``data`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Repo:
    """One repository: refs (branch or ``refs/pr/N`` -> commit sha) and commits (sha -> tree and message)."""

    type: str
    id: str
    private: bool = False
    created_at: str = field(default_factory=_now)
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolve(self, revision: str) -> str:
        """The commit sha of a branch, ``refs/pr/N``, ``refs/heads/X`` or (a prefix of) a commit sha."""
        rev = revision.removeprefix("refs/heads/")
        if rev in self.refs:
            return self.refs[rev]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            matches = [sha for sha in list(self.commits) if sha.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class Store:
    """Repos in memory, mirrored as JSON under ``root/repos``; file bytes under ``root/blobs/<sha256>``."""

    def __init__(self, root: Path, user: str) -> None:
        self.root, self.user = root, user
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        for path in sorted(root.glob("repos/*/*/*/repo.json")):  # reload a previous run's state
            repo = Repo(**json.loads(path.read_text()))
            self.repos[(repo.type, repo.id)] = repo

    # -- blobs ---------------------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not (self.blobs / sha).exists():
            tmp = self.blobs / f".{sha}.{uuid.uuid4().hex}"
            tmp.write_bytes(data)
            tmp.replace(self.blobs / sha)
        return sha

    def blob(self, sha256: str) -> bytes:
        return (self.blobs / sha256).read_bytes()

    def has_blob(self, sha256: str) -> bool:
        return re.fullmatch(r"[0-9a-f]{64}", sha256) is not None and (self.blobs / sha256).is_file()

    # -- repos ---------------------------------------------------------------------------------------------
    def get(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def save(self, repo: Repo) -> None:
        folder = self.root / "repos" / f"{repo.type}s" / repo.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "repo.json").write_text(json.dumps(repo.__dict__, indent=1))

    def create(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = Repo(type=repo_type, id=repo_id, private=private)
            self.repos[(repo_type, repo_id)] = repo
            attributes = self.put_blob(DEFAULT_GITATTRIBUTES.encode())
            files = {".gitattributes": self._entry(attributes, lfs=False)}
            self._add_commit(repo, "main", None, files, "initial commit", "")
            return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            self.get(repo_type, repo_id)
            del self.repos[(repo_type, repo_id)]
            shutil.rmtree(self.root / "repos" / f"{repo_type}s" / repo_id, ignore_errors=True)

    def _entry(self, sha256: str, lfs: bool) -> dict[str, Any]:
        size = (self.blobs / sha256).stat().st_size
        oid = _git_oid(_lfs_pointer(sha256, size) if lfs else self.blob(sha256))
        return {"sha256": sha256, "size": size, "lfs": lfs, "oid": oid}

    def _add_commit(self, repo: Repo, ref: str, parent: str | None, files: dict, title: str,
                    message: str) -> str:
        seed = f"{repo.id}\n{parent}\n{title}\n{uuid.uuid4().hex}\n{json.dumps(files, sort_keys=True)}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = {"parents": [parent] if parent else [], "title": title, "message": message,
                             "date": _now(), "files": files}
        repo.refs[ref] = sha
        self.save(repo)
        return sha

    def commit(self, repo: Repo, revision: str, lines: list[dict], create_pr: bool) -> tuple[str, str]:
        """Apply an NDJSON commit payload to ``revision``; returns (commit sha, ref it was written to)."""
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a 'header' line")
        header = lines[0]["value"]
        with self.lock:
            branch = revision.removeprefix("refs/heads/")
            if branch not in repo.refs and not create_pr:  # commits go to branches (or PRs), not to shas
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.resolve(branch)
            parent = header.get("parentCommit")
            if parent and parent != head:
                raise HubError(412, f"A commit has happened since {parent}: {revision} is now at {head}")
            files = dict(repo.commits[head]["files"])
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding for {path}: {value.get('encoding')}")
                    files[path] = self._entry(self.put_blob(base64.b64decode(value["content"])), lfs=False)
                elif key == "lfsFile":
                    if not self.has_blob(value.get("oid", "")):
                        raise HubError(400, f"LFS object {value.get('oid')} for {path} was never uploaded")
                    files[path] = self._entry(value["oid"], lfs=True)
                    if "size" in value and value["size"] != files[path]["size"]:
                        raise HubError(400, f"Size mismatch for LFS file {path}")
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    gone = [p for p in files if p.startswith(prefix)]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del files[p]
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}")
            ref = f"refs/pr/{1 + sum(r.startswith('refs/pr/') for r in repo.refs)}" if create_pr else branch
            title = header.get("summary") or "Upload files"
            return self._add_commit(repo, ref, head, files, title, header.get("description", "")), ref

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        with self.lock:
            if branch in repo.refs:
                raise HubError(409, f"Reference {branch} already exists")
            repo.refs[branch] = repo.resolve(starting_point or "main")
            self.save(repo)

    def delete_branch(self, repo: Repo, branch: str) -> None:
        with self.lock:
            if branch not in repo.refs or branch == "main":
                raise HubError(404 if branch not in repo.refs else 403, f"Cannot delete branch {branch}")
            del repo.refs[branch]
            self.save(repo)

    def is_lfs(self, repo: Repo, sha: str, path: str, size: int, sample: bytes) -> bool:
        """The Hub's rule: large or binary files, and files a ``filter=lfs`` .gitattributes line matches."""
        if size >= LFS_THRESHOLD or b"\0" in sample:
            return True
        attributes = repo.commits[sha]["files"].get(".gitattributes")
        text = self.blob(attributes["sha256"]).decode(errors="replace") if attributes else ""
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                target = path if "/" in parts[0] else path.rsplit("/", 1)[-1]
                if fnmatch.fnmatchcase(target, parts[0]):
                    return True
        return False


class HubServer:
    """The loopback Hub: ``HubServer(root).start()`` serves ``root`` at ``.endpoint`` until ``.stop()``."""

    def __init__(self, root: str | Path | None = None, host: str = "127.0.0.1", port: int = 0,
                 user: str = DEFAULT_USER, tree_page_size: int = 1000) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="hub-server-"))
        self.user, self.tree_page_size = user, tree_page_size
        self.store = Store(self.root, user)
        self.requests: list[str] = []  # "METHOD /path?query", in arrival order, for assertions
        self.unrouted: list[str] = []  # requests with no route (API missing here) or that crashed the server
        handler = type("BoundHandler", (HubRequestHandler,), {"hub": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes Hub API requests to the ``Store`` of ``self.hub`` (set on a per-server subclass)."""

    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive; every response sends Content-Length
    server_version = "LoopbackHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    # -- plumbing ------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _iter_body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    raise HubError(400, "Truncated request body")
                remaining -= len(chunk)
                yield chunk

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from e

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        """Answer with ``body`` (not sent for HEAD, whose Content-Length may be given as ``length``)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.base = f"http://{self.headers.get('Host') or self.hub.endpoint.split('//', 1)[1]}"
        self.hub.requests.append(f"{self.command} {self.path}")
        # Read bodies up front so that an error never leaves one unread on a kept-alive connection;
        # only LFS uploads stream theirs (into the blob store, hashing on the way).
        streamed = self.command == "PUT" and url.path.startswith("/_lfs/")
        self.body = b""
        try:
            if not streamed:
                self.body = b"".join(self._iter_body())
            for method, pattern, handler in _ROUTES:
                match = pattern.fullmatch(url.path)
                if match and self.command in method.split("|"):
                    groups = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    return handler(self, **groups)
            self.hub.unrouted.append(f"{self.command} {self.path}")
            raise HubError(404, f"No route for {self.command} {url.path} on the loopback Hub")
        except HubError as e:
            headers = {"X-Error-Message": e.message.encode("ascii", "replace").decode()}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self.close_connection = streamed  # an upload's body may be unread: don't reuse the connection
            self._json({"error": e.message, **e.extra}, e.status, headers)
        except Exception as e:  # a bug here: tell the client (and stderr) instead of dropping the socket
            traceback.print_exc()
            self.hub.unrouted.append(f"{self.command} {self.path} (server error: {e!r})")
            self.close_connection = True
            self._json({"error": f"Loopback Hub crashed: {e!r}"}, 500)

    def _repo(self, kind: str, repo: str) -> Repo:
        return self.hub.store.get(_TYPES.get(kind, kind), repo)

    # -- account and repos ---------------------------------------------------------------------------------
    def whoami(self) -> None:
        user = self.hub.user
        self._json({"type": "user", "id": user, "name": user, "fullname": user.title(), "email": None,
                    "orgs": [], "auth": {"type": "access_token",
                                         "accessToken": {"displayName": "loopback", "role": "write"}}})

    def create_repo(self) -> None:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Unsupported repo type {repo_type!r}")
        repo_id = f"{body.get('organization') or self.hub.user}/{body['name']}"
        private = body.get("visibility", "public") != "public" or bool(body.get("private"))
        url = f"{self.base}/{_URL_PREFIX[repo_type]}{repo_id}"
        try:
            self.hub.store.create(repo_type, repo_id, private)
        except HubError as e:  # the Hub's 409 carries the url: create_repo(exist_ok=True) reads it
            e.extra["url"] = url
            raise
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self) -> None:
        body = self._json_body()
        repo_id = f"{body.get('organization') or self.hub.user}/{body['name']}"
        self.hub.store.delete(body.get("type") or "model", repo_id)
        self._json({})

    def validate_yaml(self) -> None:
        self._json_body()
        self._json({"errors": [], "warnings": []})

    def repo_info(self, kind: str, repo: str, rev: str | None = None) -> None:
        r = self._repo(kind, repo)
        sha = r.resolve(rev or "main")
        files = r.commits[sha]["files"]
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    size = entry["size"]
                    sibling["lfs"] = {"sha256": entry["sha256"], "size": size,
                                      "pointerSize": len(_lfs_pointer(entry["sha256"], size))}
            siblings.append(sibling)
        self._json({"_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo,
                    "author": repo.split("/")[0], "sha": sha, "lastModified": r.commits[sha]["date"],
                    "createdAt": r.created_at, "private": r.private, "gated": False, "disabled": False,
                    "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                    "usedStorage": sum(e["size"] for e in files.values())})

    def list_refs(self, kind: str, repo: str) -> None:
        refs = list(self._repo(kind, repo).refs.items())
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in refs if "/" not in n]
        prs = [{"name": n, "ref": n, "targetCommit": s} for n, s in refs if n.startswith("refs/pr/")]
        self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": prs})

    def list_commits(self, kind: str, repo: str, rev: str) -> None:
        r = self._repo(kind, repo)
        sha, history = r.resolve(rev), []
        while sha:
            c = r.commits[sha]
            history.append({"id": sha, "authors": [{"user": self.hub.user}], "date": c["date"],
                            "title": c["title"], "message": c["message"]})
            sha = c["parents"][0] if c["parents"] else None
        self._json(history)

    def create_branch(self, kind: str, repo: str, branch: str) -> None:
        r = self._repo(kind, repo)
        if self.command == "DELETE":
            self.hub.store.delete_branch(r, branch)
        else:
            self.hub.store.create_branch(r, branch, self._json_body().get("startingPoint"))
        self._json({})

    def xet_token(self, kind: str, repo: str, rest: str | None = None) -> None:
        raise HubError(501, "The loopback Hub has no Xet storage: set HF_HUB_DISABLE_XET=1 (git-LFS uploads)")

    # -- tree ----------------------------------------------------------------------------------------------
    def _tree_entries(self, files: dict[str, dict], prefix: str, recursive: bool) -> list[dict[str, Any]]:
        """Tree entries under ``prefix`` ("" = root): files and folders, all or only the direct ones."""
        start = prefix + "/" if prefix else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, entry in sorted(files.items()):
            if not path.startswith(start):
                continue
            parts = path[len(start):].split("/")
            for depth in range(1, len(parts)):  # folders on the way to the file
                folder = start + "/".join(parts[:depth])
                if folder not in entries:
                    oid = hashlib.sha1("".join(p + e["oid"] for p, e in sorted(files.items())
                                               if p.startswith(folder + "/")).encode()).hexdigest()
                    entries[folder] = {"type": "directory", "oid": oid, "size": 0, "path": folder}
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[path] = self._file_entry(path, entry)
        return sorted(entries.values(), key=lambda e: e["path"])

    @staticmethod
    def _file_entry(path: str, entry: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            out["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                          "pointerSize": len(_lfs_pointer(entry["sha256"], entry["size"]))}
        return out

    def list_tree(self, kind: str, repo: str, rev: str, path: str | None = None) -> None:
        r = self._repo(kind, repo)
        files = r.commits[r.resolve(rev)]["files"]
        prefix = (path or "").strip("/")
        if prefix and not any(p.startswith(prefix + "/") for p in files):
            raise HubError(404, f"{prefix} does not exist on {rev}", "EntryNotFound")
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        entries = self._tree_entries(files, prefix, recursive)
        start = int(self.query.get("cursor", "0"))
        page = entries[start:start + self.hub.tree_page_size]
        headers = {}
        if start + len(page) < len(entries):
            params = {**self.query, "cursor": str(start + len(page))}
            query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
            headers["Link"] = f'<{self.base}{urlsplit(self.path).path}?{query}>; rel="next"'
        self._json(page, headers=headers)

    def paths_info(self, kind: str, repo: str, rev: str) -> None:
        r = self._repo(kind, repo)
        files = r.commits[r.resolve(rev)]["files"]
        raw = self.body.decode()
        is_json = "json" in self.headers.get("Content-Type", "")
        form = json.loads(raw or "{}") if is_json else parse_qs(raw)
        paths = form.get("paths", [])
        paths = [paths] if isinstance(paths, str) else paths
        out = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(self._file_entry(p, files[p]))
            elif any(f.startswith(p + "/") for f in files):
                siblings = self._tree_entries(files, p.rpartition("/")[0], recursive=False)
                out.extend(e for e in siblings if e["path"] == p)
        self._json(out)

    # -- uploads -------------------------------------------------------------------------------------------
    def preupload(self, kind: str, repo: str, rev: str) -> None:
        r = self._repo(kind, repo)
        body = self._json_body()
        sha = r.resolve(rev)
        files = r.commits[sha]["files"]
        out = []
        for f in body.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = self.hub.store.is_lfs(r, sha, f["path"], int(f["size"]), sample)
            old = files.get(f["path"])
            remote_oid = None if old is None else (old["sha256"] if old["lfs"] else old["oid"])
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": remote_oid})
        self._json({"files": out})

    def commit(self, kind: str, repo: str, rev: str) -> None:
        r = self._repo(kind, repo)
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise HubError(400, f"Invalid NDJSON commit payload: {e}") from e
        create_pr = self.query.get("create_pr") == "1"
        sha, ref = self.hub.store.commit(r, rev, lines, create_pr)
        prefix = f"{self.base}/{_URL_PREFIX[r.type]}{r.id}"
        pr_url = f"{prefix}/discussions/{ref.rsplit('/', 1)[-1]}" if create_pr else None
        self._json({"success": True, "commitOid": sha, "commitUrl": f"{prefix}/commit/{sha}",
                    "pullRequestUrl": pr_url})

    def lfs_batch(self, kind: str | None, repo: str) -> None:
        self._repo(kind or "models", repo)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(422, "The loopback Hub's LFS batch API only does uploads (downloads use /resolve)")
        if "basic" not in body.get("transfers", ["basic"]):
            raise HubError(422, "The loopback Hub only offers the 'basic' LFS transfer")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            href = f"{self.base}/_lfs/{oid}"
            if not self.hub.store.has_blob(oid):  # else: already stored, the client skips the upload
                item["actions"] = {"upload": {"href": f"{href}?size={size}", "header": {}},
                                   "verify": {"href": f"{href}/verify", "header": {}}}
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def lfs_object(self, oid: str, verify: str | None = None) -> None:
        store = self.hub.store
        if verify:
            body = self._json_body()
            if not store.has_blob(oid) or (store.blobs / oid).stat().st_size != int(body.get("size", -1)):
                raise HubError(404, f"LFS object {oid} is missing or has the wrong size")
            return self._json({})
        digest, tmp = hashlib.sha256(), store.blobs / f".{oid}.{uuid.uuid4().hex}"
        with tmp.open("wb") as f:
            for chunk in self._iter_body():
                digest.update(chunk)
                f.write(chunk)
        size = tmp.stat().st_size
        if digest.hexdigest() != oid or ("size" in self.query and int(self.query["size"]) != size):
            tmp.unlink()
            got = f"sha256 {digest.hexdigest()}, {size} bytes"
            raise HubError(400, f"Uploaded bytes do not match oid {oid} (got {got})")
        tmp.replace(store.blobs / oid)
        self._send(200, b"", {"ETag": f'"{oid}"'})

    # -- downloads -----------------------------------------------------------------------------------------
    def resolve(self, kind: str | None, repo: str, rev: str, path: str) -> None:
        r = self._repo(kind or "models", repo)
        sha = r.resolve(rev)
        entry = r.commits[sha]["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path} at {rev}", "EntryNotFound", commit=sha)
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(entry["size"])})
        if self.command == "HEAD":
            return self._send(200, b"", headers, "application/octet-stream", length=entry["size"])
        data = self.hub.store.blob(entry["sha256"])
        status, total = 200, len(data)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and match.group(1) + match.group(2):
            first = int(match.group(1)) if match.group(1) else max(total - int(match.group(2)), 0)
            last = int(match.group(2)) if match.group(1) and match.group(2) else total - 1
            if first >= total or first > last:
                raise HubError(416, f"Range {self.headers['Range']} not satisfiable for {total} bytes")
            data, status = data[first:min(last, total - 1) + 1], 206
            headers["Content-Range"] = f"bytes {first}-{first + len(data) - 1}/{total}"
        self._send(status, data, headers, content_type="application/octet-stream")


_API = rf"/api/(?P<kind>models|datasets|spaces)/{_REPO}"
_ROUTES = [
    ("GET", re.compile(r"/api/whoami-v2"), HubRequestHandler.whoami),
    ("POST", re.compile(r"/api/repos/create"), HubRequestHandler.create_repo),
    ("DELETE", re.compile(r"/api/repos/delete"), HubRequestHandler.delete_repo),
    ("POST", re.compile(r"/api/validate-yaml"), HubRequestHandler.validate_yaml),
    ("GET", re.compile(rf"{_API}(?:/revision/(?P<rev>[^/]+))?"), HubRequestHandler.repo_info),
    ("GET", re.compile(rf"{_API}/refs"), HubRequestHandler.list_refs),
    ("GET", re.compile(rf"{_API}/commits/(?P<rev>[^/]+)"), HubRequestHandler.list_commits),
    ("GET", re.compile(rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"), HubRequestHandler.list_tree),
    ("POST", re.compile(rf"{_API}/paths-info/(?P<rev>[^/]+)"), HubRequestHandler.paths_info),
    ("POST", re.compile(rf"{_API}/preupload/(?P<rev>[^/]+)"), HubRequestHandler.preupload),
    ("POST", re.compile(rf"{_API}/commit/(?P<rev>[^/]+)"), HubRequestHandler.commit),
    ("POST|DELETE", re.compile(rf"{_API}/branch/(?P<branch>[^/]+)"), HubRequestHandler.create_branch),
    ("GET|POST", re.compile(rf"{_API}/xet-(?:read|write)-token(?P<rest>/.*)?"), HubRequestHandler.xet_token),
    ("POST", re.compile(rf"/(?:(?P<kind>datasets|spaces)/)?{_REPO}\.git/info/lfs/objects/batch"),
     HubRequestHandler.lfs_batch),
    ("PUT|POST", re.compile(r"/_lfs/(?P<oid>[0-9a-f]{64})(?P<verify>/verify)?"),
     HubRequestHandler.lfs_object),
    ("GET|HEAD", re.compile(rf"/(?:(?P<kind>datasets|spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
     HubRequestHandler.resolve),
]

