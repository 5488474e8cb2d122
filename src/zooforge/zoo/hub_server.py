"""A loopback stand-in for the Hugging Face Hub, so the real download path runs without internet.

It speaks the part of the Hub's HTTP API that the unmodified ``huggingface_hub``, timm and
transformers clients use when ``HF_ENDPOINT`` points at it:

* ``GET /api/models?search=&pipeline_tag=&filter=&sort=&limit=``: the listing, newest commit shas
  (``/api/datasets?...`` for dataset repos);
* ``GET /api/{models|datasets}/<repo>[/revision/<rev>]``: repo info (sha, siblings, tags, pipeline,
  library);
* ``GET /api/{models|datasets}/<repo>/tree/<rev>[/<path>][?recursive=true]`` and
  ``POST .../paths-info/<rev>``: the file listing that ``snapshot_download`` (``hf download``) and
  ``HfFileSystem`` (``datasets.load_dataset``) read, one page;
* ``HEAD|GET /<repo>/resolve/<rev>/<path>`` (``/datasets/<repo>/resolve/...``): a file, with the
  ``ETag``, ``X-Repo-Commit`` and ``Content-Length`` headers the client checks; ``Range`` requests
  for resumed downloads;
* 404 with the Hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound).

Each repository is a list of commits, each a local folder; the last commit is ``main``. Faults for
tests: ``drop_after`` cuts a file's body after that many bytes (a server dying mid-download).

    with HubServer({"org/model": [folder_v1, folder_v2]}, datasets={"org/data": [folder]}) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

__all__ = ["HubServer", "HubRepo", "sha_of"]


@dataclass
class HubRepo:
    """One repository: commits oldest first (sha -> folder), and the metadata the listing shows."""

    commits: list[tuple[str, Path]]
    pipeline_tag: str | None = None
    library_name: str | None = None
    tags: list[str] = field(default_factory=list)
    downloads: int = 0

    @property
    def head(self) -> str:
        return self.commits[-1][0]

    def folder(self, revision: str) -> tuple[str, Path] | None:
        if revision == "main":
            return self.commits[-1]
        return next(((sha, path) for sha, path in self.commits if sha == revision or sha.startswith(revision)
                     and len(revision) >= 7), None)


def sha_of(folder: Path) -> str:
    """A commit sha for a folder: the SHA-1 of its files' paths and bytes (same content, same sha)."""
    digest = hashlib.sha1()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(folder)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


class HubServer:
    """Serve ``repos`` ({repo id: [folder, ...] or HubRepo}) on 127.0.0.1 at a free port."""

    def __init__(self, repos: dict, *, datasets: dict | None = None, drop_after: int | None = None):
        def as_repos(given: dict) -> dict[str, HubRepo]:
            return {repo_id: value if isinstance(value, HubRepo) else HubRepo([(sha_of(Path(f)), Path(f)) for f in value])
                    for repo_id, value in given.items()}

        self.kinds: dict[str, dict[str, HubRepo]] = {"models": as_repos(repos), "datasets": as_repos(datasets or {})}
        self.drop_after = drop_after
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):       # quiet: tests read `requests` instead
                pass

            def do_HEAD(self):
                server._handle(self, body=False)

            def do_GET(self):
                server._handle(self, body=True)

            def do_POST(self):
                server._handle(self, body=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ---- the API ------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        self.requests.append(f"{h.command} {path}")
        query = parse_qs(url.query)
        if h.command == "POST":                         # paths-info sends its paths as a form
            length = int(h.headers.get("Content-Length") or 0)
            query |= parse_qs(h.rfile.read(length).decode())
        parts = [unquote(p) for p in url.path.strip("/").split("/")]    # a revision may hold an encoded "/"
        if parts[0] == "api" and len(parts) >= 2 and parts[1] in self.kinds:
            repos = self.kinds[parts[1]]
            if len(parts) == 2:
                return self._json(h, self._listing(repos, query), body)
            repo_id = "/".join(parts[2:4])
            verb = parts[4] if len(parts) > 4 else "revision"
            revision = parts[5] if len(parts) > 5 else "main"
            rest = parts[6:]
            if verb == "revision":
                return self._info(h, repos, repo_id, revision, body)
            if verb == "tree":
                return self._tree(h, repos, repo_id, revision, "/".join(rest), query, body)
            if verb == "paths-info":
                return self._paths_info(h, repos, repo_id, revision, query.get("paths", []), body)
        kind = "datasets" if parts[0] == "datasets" else "models"
        parts = parts[1:] if kind == "datasets" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._file(h, self.kinds[kind], "/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        return self._error(h, 404, "EntryNotFound", f"no route {path}")

    def _listing(self, repos: dict[str, HubRepo], query: dict) -> list[dict]:
        def one(key):
            return query.get(key, [None])[0]

        out = []
        for repo_id, repo in repos.items():
            if one("search") and one("search").lower() not in repo_id.lower():
                continue
            if one("pipeline_tag") and repo.pipeline_tag != one("pipeline_tag"):
                continue
            wanted = query.get("filter", []) + query.get("library", [])      # a library is a tag on the Hub
            if any(w != repo.library_name and w not in repo.tags for w in wanted):
                continue
            out.append(self._card(repo_id, repo, repo.head))
        if one("sort") in ("downloads", "likes"):
            out.sort(key=lambda r: -r["downloads"])
        return out[: int(one("limit"))] if one("limit") else out

    def _card(self, repo_id: str, repo: HubRepo, sha: str) -> dict:
        return {"id": repo_id, "modelId": repo_id, "sha": sha, "pipeline_tag": repo.pipeline_tag,
                "library_name": repo.library_name, "tags": repo.tags, "downloads": repo.downloads,
                "private": False}

    def _commit(self, h, repos: dict[str, HubRepo], repo_id: str, revision: str) -> tuple[HubRepo, str, Path] | None:
        """(repo, sha, folder) of ``repo_id`` at ``revision``, or None after answering the Hub's 404."""
        repo = repos.get(repo_id)
        if repo is None:
            self._error(h, 404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        found = repo.folder(revision)
        if found is None:
            self._error(h, 404, "RevisionNotFound", f"Revision {revision} not found")
            return None
        return repo, *found

    def _info(self, h, repos, repo_id: str, revision: str, body: bool) -> None:
        commit = self._commit(h, repos, repo_id, revision)
        if commit is None:
            return
        repo, sha, folder = commit
        siblings = [{"rfilename": str(p.relative_to(folder))} for p in sorted(folder.rglob("*")) if p.is_file()]
        return self._json(h, self._card(repo_id, repo, sha) | {"siblings": siblings}, body)

    def _tree(self, h, repos, repo_id: str, revision: str, under: str, query: dict, body: bool) -> None:
        commit = self._commit(h, repos, repo_id, revision)
        if commit is None:
            return
        folder = commit[2]
        root = folder / under
        if not root.is_dir():
            return self._error(h, 404, "EntryNotFound", f"{under} not found in {repo_id}@{revision}", commit[1])
        recursive = query.get("recursive", ["false"])[0] in ("true", "1", "True")
        found = sorted(root.rglob("*") if recursive else root.iterdir())
        return self._json(h, [_tree_entry(folder, p) for p in found], body)

    def _paths_info(self, h, repos, repo_id: str, revision: str, paths: list[str], body: bool) -> None:
        commit = self._commit(h, repos, repo_id, revision)
        if commit is None:
            return
        folder = commit[2]
        return self._json(h, [_tree_entry(folder, folder / p) for p in paths if (folder / p).exists()], body)

    def _file(self, h, repos, repo_id: str, revision: str, name: str, body: bool) -> None:
        commit = self._commit(h, repos, repo_id, revision)
        if commit is None:
            return
        _, sha, folder = commit
        file = folder / name
        if not file.is_file():
            return self._error(h, 404, "EntryNotFound", f"{name} not found in {repo_id}@{revision}", sha)
        data = file.read_bytes()
        start = 0
        ranged = h.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            start = int(ranged[len("bytes="):].split("-")[0] or 0)
        h.send_response(206 if start else 200)
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", sha)
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if body:
            chunk = data[start:]
            if self.drop_after is not None and len(chunk) > self.drop_after:
                h.wfile.write(chunk[: self.drop_after])
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(2)        # the server "dies" mid-file
                return
            h.wfile.write(chunk)

    def _json(self, h, payload, body: bool) -> None:
        data = json.dumps(payload).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _error(self, h, status: int, code: str, message: str, sha: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        if sha:
            h.send_header("X-Repo-Commit", sha)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)


def _tree_entry(folder: Path, path: Path) -> dict:
    """One entry of the Hub's tree listing (git blob ids are not checked by the clients)."""
    rel = str(path.relative_to(folder))
    if path.is_dir():
        return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": 0, "path": rel}
    data = path.read_bytes()
    return {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": rel}
