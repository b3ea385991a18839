"""Segmenting user images (``python -m zs3core.predict``), with and without added class names.

Unit tests (no pipeline): the calibration-and-argmax helper on hand-made logits, the overlay
figure, image reading errors. Pipeline tests: a module fixture runs the stage modules that
predict reads come from the session's tiny CamVid pipeline (tests/conftest.py ``tiny_pipeline``,
real frames of ``../shared/data``, skipped when absent); the tests segment two real
val frames, adds the class ``bus`` (not a CamVid class), and checks the errors of an unknown
word and an unreadable image. The pipeline tests are marked ``e2e`` (``-m "not e2e"`` skips them).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zs3core.io import Zs3Error
from zs3core.predict import check_images, label_map, load_predictor, main, predict_images, read_image_file
from zs3core.viz import overlay_image, overlay_legend, palette

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
CAMVID = ["sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian", "bicyclist"]


# ------------------------------------------------------------------ unit tests
def reference_labels(logits: torch.Tensor, size, seen, gamma) -> torch.Tensor:
    """A second implementation, without zs3core: upsample every class at once with torch's own
    bilinear ``interpolate`` (align_corners=False), subtract γ from each seen row by hand, argmax."""
    up = torch.nn.functional.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    if gamma:
        up = up.clone()
        for c in seen:
            up[c] -= gamma
    return up.argmax(0)


def test_label_map_applies_gamma_to_seen_classes_only():
    # 3 classes, seen = {0, 1}, unseen = {2}; per pixel (y, x) of a 1x3 map:
    # x=0: seen 0 leads unseen by 1.0; x=1: by 3.0; x=2: unseen already leads
    logits = torch.tensor([[[5.0, 6.0, 1.0]], [[0.0, 0.0, 0.0]], [[4.0, 3.0, 2.0]]])
    plain = label_map(logits, (1, 3), seen=[0, 1], gamma=None)
    assert plain.dtype == torch.int64 and plain.shape == (1, 3)
    assert plain.tolist() == [[0, 0, 2]]
    assert label_map(logits, (1, 3), [0, 1], 0.0).tolist() == [[0, 0, 2]]     # γ = 0: unchanged
    assert label_map(logits, (1, 3), [0, 1], 2.0).tolist() == [[2, 0, 2]]     # margin 1 < 2 flips, 3 does not
    assert label_map(logits, (1, 3), [0, 1], 5.0).tolist() == [[2, 2, 2]]
    assert label_map(logits, (1, 3), [0, 1], -10.0).tolist() == [[0, 0, 0]]   # γ < 0 favours the seen classes
    # a tie goes to the lower class id, as argmax
    tie = torch.tensor([[[1.0]], [[1.0]], [[1.0]]])
    assert label_map(tie, (1, 1), [0, 1], None).item() == 0


def test_label_map_equals_upsample_then_argmax_in_any_chunking():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, 6, generator=g)
    seen = [0, 2, 3, 6]
    for gamma in (None, 0.7):
        ref = reference_labels(logits, (19, 23), seen, gamma)
        for max_bytes in (1, 4 * 19 * 23 * 2, 4 * 19 * 23 * 3, 10**9):  # 1, 2, 3 or all classes per group
            assert torch.equal(label_map(logits, (19, 23), seen, gamma, max_bytes=max_bytes), ref), (gamma, max_bytes)


def test_overlay_is_the_image_size_with_a_legend_of_present_classes():
    img = np.full((90, 120, 3), 200, dtype=np.uint8)
    lab = np.zeros((90, 120), dtype=np.int64)
    lab[:, 60:] = 3
    lab[:10, :10] = 2
    classes = ["a", "b", "c", "d"]
    entries = overlay_legend(lab, classes, unseen=[2, 3], added=[3])
    assert [c for c, _ in entries] == [3, 0, 2]                      # most pixels first, absent class 1 left out
    assert entries[0][1] == "d (new) 50.0%" and entries[2][1] == "c (unseen) 0.9%" and entries[1][1] == "a 49.1%"
    pal = palette(4, "camvid")
    out = overlay_image(img, lab, classes, pal, [2, 3], [3], alpha=0.5)
    assert out.shape == (90, 120, 3) and out.dtype == np.uint8
    # far from the legend (lower left), a pixel is the 50/50 blend of image and class colour
    expect = np.rint(0.5 * 200 + 0.5 * pal[0].astype(float))
    assert np.abs(out[85, 5].astype(float) - expect).max() <= 1
    with pytest.raises(ValueError, match="differ in size"):
        overlay_image(img[:10], lab, classes, pal)


def test_read_image_file_errors_and_orientation(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not a jpeg at all" * 10)
    with pytest.raises(Zs3Error, match="x.jpg"):
        read_image_file(bad)
    with pytest.raises(Zs3Error, match="nothere.png"):
        read_image_file(tmp_path / "nothere.png")
    # a truncated JPEG is caught too
    good = tmp_path / "g.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(Zs3Error, match="cut.jpg"):
        read_image_file(cut)
    # EXIF orientation 6 (rotated 90°): the image comes out as displayed, 40 wide and 60 high
    exif = Image.Exif()
    exif[0x0112] = 6
    rot = tmp_path / "rot.jpg"
    Image.open(good).save(rot, exif=exif)
    x = read_image_file(rot)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 60, 40)
    with pytest.raises(Zs3Error, match="same file name stem"):
        check_images([good, tmp_path / "sub" / "g.png"])


def test_cli_refuses_bad_arguments_before_loading_anything(tmp_path, capsys):
    assert main([str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o"), "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.jpg" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ the trained pipeline
def yaml_params(repo: Path) -> dict:
    import yaml

    return yaml.safe_load((repo / "params.yaml").read_text())


@pytest.fixture(scope="module")
def trained(tiny_pipeline):
    """The session's tiny CamVid pipeline (tests/conftest.py: ``dvc exp run`` of the README's
    local-data command), as a read-only snapshot: (repo path, two real val frames)."""
    _, snapshot, _ = tiny_pipeline
    lines = (SHARED / "camvid" / "val.txt").read_text().split("\n")
    return snapshot, [SHARED / "camvid" / ln.split()[0] for ln in lines[:2]]


@pytest.mark.e2e
def test_predict_real_frames(trained, tmp_path):
    repo, frames = trained
    out = tmp_path / "out"
    assert main([*map(str, frames), "--out", str(out), "--repo", str(repo)]) == 0
    gamma = json.loads((repo / "metrics" / "calibration.json").read_text())["zs3net"]["gamma"]
    for f in frames:
        w, h = Image.open(f).size
        lab = Image.open(out / f"{f.stem}_labels.png")
        assert lab.mode == "L" and lab.size == (w, h)
        ids = np.asarray(lab)
        assert ids.max() < len(CAMVID)
        ov = Image.open(out / f"{f.stem}_overlay.png")
        assert ov.mode == "RGB" and ov.size == (w, h)
        meta = json.loads((out / f"{f.stem}_labels.json").read_text())
        assert meta["classes"] == CAMVID and meta["added"] == [] and meta["model"] == "zs3net"
        assert meta["calibrated"] and meta["gamma"] == pytest.approx(gamma)
        assert sum(meta["pixels"].values()) == w * h
        assert meta["pixels"] == {CAMVID[c]: int((ids == c).sum()) for c in np.unique(ids)}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f.stem}{s}" for f in frames
                                                           for s in ("_labels.png", "_labels.json", "_overlay.png"))


@pytest.mark.e2e
def test_calibration_uses_the_models_gamma(trained):
    repo, frames = trained
    cal = json.loads((repo / "metrics" / "calibration.json").read_text())
    on = load_predictor(repo, "zs3net", calibrated=True, log=lambda *a: None)
    off = load_predictor(repo, "zs3net", calibrated=False, log=lambda *a: None)
    zs5 = load_predictor(repo, "zs5net", calibrated=True, log=lambda *a: None)
    assert on.gamma == pytest.approx(cal["zs3net"]["gamma"]) and off.gamma is None
    assert zs5.gamma is None and "zs5net" not in cal      # ZS5Net has no γ of its own: uncalibrated
    assert on.unseen == [CAMVID.index("fence"), CAMVID.index("bicyclist")]
    img = read_image_file(frames[0])
    logits = on.logits(img)
    assert logits.dtype == torch.float32 and logits.shape[0] == len(CAMVID)
    size = tuple(img.shape[1:])
    assert torch.equal(on.segment(img), reference_labels(logits, size, on.seen, on.gamma))
    assert torch.equal(off.segment(img), reference_labels(logits, size, on.seen, None))


@pytest.mark.e2e
def test_added_class_bus(trained, tmp_path, capsys, monkeypatch):
    """``--classes bus``: one more class, a classifier with C+1 outputs trained on generated
    features of the bus word vector, which it then calls bus most of the time.

    At ``scale=tiny`` the backbone and the generator are barely trained (a smoke scale), so the
    test checks what the retraining is made of and learns, not segmentation quality."""
    import zs3core.generators as generators
    import zs3core.retrain as retrain
    from zs3core.predict import _keyed_vectors

    repo, frames = trained
    sets, sampled = [], []
    real_set, real_sample = retrain.retraining_set, generators.GMMNKind.sample

    def spy_set(*args, **kwargs):
        sets.append(real_set(*args, **kwargs))
        return sets[-1]

    def spy_sample(self, gen, emb, classes, n, ctx, rng, device):
        sampled.append((emb.clone(), list(classes), n))
        return real_sample(self, gen, emb, classes, n, ctx, rng, device)

    monkeypatch.setattr(retrain, "retraining_set", spy_set)
    monkeypatch.setattr(generators.GMMNKind, "sample", spy_sample)
    t0 = time.time()
    pred = load_predictor(repo, classes=["bus"])
    seconds = time.time() - t0
    rep = pred.retraining
    bus = len(CAMVID)
    assert pred.classes == CAMVID + ["bus"] and pred.added == [bus] and pred.unseen == [7, 10, bus]
    assert pred.head.linear.out_features == len(CAMVID) + 1
    cal = json.loads((repo / "metrics" / "calibration.json").read_text())
    assert pred.gamma == pytest.approx(cal["zs3net"]["gamma"])
    # the generator was asked for bus features from the (L2-normalised) GloVe vector of 'bus'
    kv = _keyed_vectors(rep["vectors"])
    vec = torch.tensor(np.array(kv["bus"]), dtype=torch.float32)
    emb, classes, n = next(s for s in sampled if bus in s[1])
    assert classes == [7, 10, bus] and torch.allclose(emb[bus], vec / vec.norm(), atol=1e-6)
    # ... and the classifier was trained on them, labelled bus, as unseen features
    x, y, generated = sets[-1]
    per_unseen = int(yaml_params(repo)["classifier"]["generated_per_unseen"])
    assert int((y == bus).sum()) == per_unseen == n and bool(generated[y == bus].all())
    with torch.no_grad():
        called_bus = float((pred.head(x[y == bus]).argmax(1) == bus).float().mean())
    assert called_bus >= 0.5 and rep["generated_recall"]["bus"] >= 50.0, (called_bus, rep)
    timing = [f"--classes bus: load + retraining {seconds:.1f} s, retraining alone {rep['seconds']} s "
              f"(cpu {rep['cpu_seconds']} s), {rep['training_features']} features; bus features called bus: "
              f"{100 * called_bus:.0f}% (training), {rep['generated_recall']['bus']}% (fresh)"]
    out = tmp_path / "bus"
    recs = predict_images(frames, out, pred)
    for f, rec in zip(frames, recs):
        ids = np.asarray(Image.open(out / f"{f.stem}_labels.png"))
        assert ids.shape == tuple(reversed(Image.open(f).size)) and ids.max() <= bus
        assert Image.open(out / f"{f.stem}_overlay.png").size == Image.open(f).size
        meta = json.loads((out / f"{f.stem}_labels.json").read_text())
        assert meta["classes"][-1] == "bus" and meta["added"] == [bus] and meta["retraining"]["added"] == ["bus"]
        timing.append(f"{f.name}: {rec['seconds']:.2f} s (cpu {rec['cpu_seconds']:.2f} s); {meta['pixels']}")
    with capsys.disabled():  # shown with pytest -s
        print("\n" + "\n".join(timing))
    # the command line does the same
    monkeypatch.undo()
    capsys.readouterr()
    assert main([str(frames[0]), "--out", str(tmp_path / "cli"), "--repo", str(repo), "--classes", "bus"]) == 0
    meta = json.loads((tmp_path / "cli" / f"{frames[0].stem}_labels.json").read_text())
    assert meta["classes"] == CAMVID + ["bus"]
    assert "retrained over 11 + 1 classes" in capsys.readouterr().out


@pytest.mark.e2e
def test_unknown_word_names_word_and_vector_file(trained, tmp_path, capsys):
    repo, frames = trained
    out = tmp_path / "o"
    assert main([str(frames[0]), "--out", str(out), "--repo", str(repo), "--classes", "qwxzv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "'qwxzv'" in err[0] and "glove-wiki-gigaword-100-top50k.bin" in err[0]
    assert not out.exists()
    assert main([str(frames[0]), "--out", str(out), "--repo", str(repo), "--classes", "Car"]) == 2
    assert "already a class" in capsys.readouterr().err
    assert main([str(frames[0]), "--out", str(out), "--repo", str(repo), "--model", "zs5net", "--classes", "bus"]) == 2
    assert "--model zs3net" in capsys.readouterr().err


@pytest.mark.e2e
def test_unreadable_image_exits_2_and_writes_nothing(trained, tmp_path):
    repo, frames = trained
    bad = tmp_path / "x.jpg"
    bad.write_bytes(os.urandom(2048))
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "zs3core.predict", str(frames[0]), str(bad), "--out", str(out)],
                       cwd=repo, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]
    assert not out.exists() or not any(out.iterdir())
