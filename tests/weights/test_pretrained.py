"""keras_resnet.weights.pretrained: torchvision and timm checkpoints load with asserted parity, or fail cleanly.

The reference networks are written here in PyTorch with torchvision's module layout and state_dict
names, given random weights and random BatchNorm statistics, and saved as
``.pth`` and safetensors; the Keras model that loads them must give the same eval-mode logits.
"""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
from torch import nn  # noqa: E402

import keras_resnet  # noqa: E402
from keras_resnet.weights import pretrained  # noqa: E402
from keras_resnet.utils.io_utils import save_model, save_weights  # noqa: E402

SIZE, CLASSES = 64, 10
TOLERANCE = 1e-4  # max |keras - torch| relative to the largest torch logit


# ------------------------------------------------------------------ torchvision's layout, in torch


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv1x1(inplanes, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)  # v1.5
        self.conv3, self.bn3 = conv1x1(planes, planes * 4), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            setattr(self, f"layer{i}", self._make_layer(block, planes, count, 1 if i == 1 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x):
        return self.fc(self.features(x))


TORCH_DEPTHS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
                50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3]),
                152: (Bottleneck, [3, 8, 36, 3])}
CASES = (18, 50)


def randomized(module, seed):
    """torchvision's initialisation, then random BatchNorm affine weights and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.05, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
    return module.eval()


def relative_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def numpy_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Per case: the .pth and .safetensors files, an input batch (NHWC), the torch logits and features."""
    folder = tmp_path_factory.mktemp("checkpoints")
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    out = {}
    for depth in CASES:
        name = f"resnet{depth}"
        module = randomized(ResNet(*TORCH_DEPTHS[depth], num_classes=CLASSES), seed=depth)
        with torch.no_grad():
            xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
            logits, features = module(xt).numpy(), module.features(xt).numpy()
        torch.save(module.state_dict(), folder / f"{name}.pth")
        os.makedirs(folder / name)  # a folder of its own, so no config.json sits beside it
        state = numpy_state(module)
        safetensors_numpy.save_file(state, str(folder / name / "model.safetensors"))
        out[name] = {"depth": depth, "pth": str(folder / f"{name}.pth"),
                     "safetensors": str(folder / name / "model.safetensors"), "state": state,
                     "logits": logits, "features": features}
    out["x"] = x
    return out


def build(case, **kwargs):
    args = dict(input_shape=(SIZE, SIZE, 3), num_classes=CLASSES, classifier_activation=None)
    return keras_resnet.build(case["depth"], **{**args, **kwargs})


def snapshot(model):
    return [np.array(w.numpy()) for w in model.weights]


def assert_unchanged(model, before):
    after = snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ names


def test_torch_reference_has_torchvision_key_counts():
    with torch.device("meta"):
        counts = {d: len(ResNet(*TORCH_DEPTHS[d]).state_dict()) for d in (18, 50)}
    assert counts == {18: 122, 50: 320}  # torchvision's resnet18 and resnet50 state_dicts


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_every_depth_maps_to_exactly_torchvisions_keys(depth, monkeypatch):
    monkeypatch.setattr(keras_resnet.models.layers, "CONV_INIT", "zeros")  # names only: no random draws needed
    with torch.device("meta"):
        torch_keys = set(ResNet(*TORCH_DEPTHS[depth]).state_dict())
    model = keras_resnet.build(depth, input_shape=(SIZE, SIZE, 3))
    keys = [pretrained.checkpoint_key(w.path) for w in model.weights]
    assert None not in keys and len(set(keys)) == len(keys)
    batch_norms = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".running_var")}
    assert set(keys) | {f"{m}.num_batches_tracked" for m in batch_norms} == torch_keys


# ------------------------------------------------------------------ parity


@pytest.mark.parametrize("name,fmt", [("resnet18", "pth"), ("resnet18", "safetensors"), ("resnet50", "pth"),
                                      ("resnet50", "safetensors")])
def test_logits_match_torch_on_tensorflow(checkpoints, name, fmt):
    case = checkpoints[name]
    model = build(case, weights=case[fmt])
    error = relative_error(model.predict(checkpoints["x"], verbose=0), case["logits"])
    print(f"parity {name} {fmt} tensorflow: max relative error {error:.1e}")
    assert error < TOLERANCE


JAX_SCRIPT = """
import json, sys
import numpy as np
import keras_resnet
keras_resnet.models.layers.CONV_INIT = "zeros"  # every weight comes from the checkpoint: no random draws
jobs = json.loads(sys.argv[1])
x = np.load(jobs.pop("x"))
for out, (depth, path) in jobs.items():
    model = keras_resnet.build(depth, input_shape=x.shape[1:], num_classes=%d,
                               classifier_activation=None, weights=path)
    np.save(out, np.asarray(model.predict(x, verbose=0)))
"""


@pytest.mark.slow
def test_logits_match_torch_on_jax(checkpoints, tmp_path):
    np.save(tmp_path / "x.npy", checkpoints["x"])
    fmt = {"resnet18": "pth", "resnet50": "safetensors"}
    jobs = {str(tmp_path / f"{n}.npy"): (checkpoints[n]["depth"], checkpoints[n][f]) for n, f in fmt.items()}
    jobs["x"] = str(tmp_path / "x.npy")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", JAX_SCRIPT % CLASSES, json.dumps(jobs)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in fmt:
        error = relative_error(np.load(tmp_path / f"{name}.npy"), checkpoints[name]["logits"])
        print(f"parity {name} {fmt[name]} jax: max relative error {error:.1e}")
        assert error < TOLERANCE, (name, error)


def test_backbone_matches_torch_features_without_top(checkpoints):
    case = checkpoints["resnet50"]
    model = build(case, include_top=False, pooling="avg")
    info = pretrained.load_weights(model, case["safetensors"])
    error = relative_error(model.predict(checkpoints["x"], verbose=0), case["features"])
    print(f"parity resnet50 safetensors tensorflow, pooled features (include_top=False): {error:.1e}")
    assert error < TOLERANCE
    assert info["head_loaded"] is False and info["tensors"] == 265  # 267 variables less the classifier's two


def test_other_num_classes_loads_backbone_and_keeps_fresh_head(checkpoints, capsys):
    case = checkpoints["resnet18"]
    model = build(case, num_classes=7)
    fresh_head = np.array(model.get_layer("logits").kernel.numpy())
    info = pretrained.load_weights(model, case["pth"])
    lines = [line for line in capsys.readouterr().out.splitlines() if "keras_resnet.weights:" in line]
    assert len(lines) == 1 and "fresh initialisation" in lines[0] and "10" in lines[0]
    np.testing.assert_array_equal(model.get_layer("logits").kernel.numpy(), fresh_head)
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(),
                                  case["state"]["conv1.weight"].transpose(2, 3, 1, 0))
    assert info["head_loaded"] is False and info["tensors"] == 100 and info["kind"] == "pth"
    assert info["layout"] == "torchvision" and info["architecture"] == "resnet18"
    assert info["mean"] == [0.485, 0.456, 0.406] and info["std"] == [0.229, 0.224, 0.225]


def test_to_state_dict_round_trips_the_checkpoint(checkpoints):
    case = checkpoints["resnet18"]
    state = pretrained.to_state_dict(build(case, weights=case["safetensors"]))
    expected = {k: v for k, v in case["state"].items() if not k.endswith("num_batches_tracked")}
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


# ------------------------------------------------------------------ our own files


def test_keras_files_load_and_transfer(checkpoints, tmp_path):
    case = checkpoints["resnet18"]
    source = build(case, weights=case["pth"])
    expected = source.predict(checkpoints["x"], verbose=0)
    save_model(source, tmp_path / "m.keras")
    save_weights(source, tmp_path / "m.weights.h5")
    for path, kind in ((tmp_path / "m.keras", "keras"), (tmp_path / "m.weights.h5", "weights.h5")):
        model = build(case)
        info = pretrained.load_weights(model, path)
        assert info["kind"] == kind and info["head_loaded"] and info["mean"] is None
        np.testing.assert_allclose(model.predict(checkpoints["x"], verbose=0), expected, rtol=1e-5, atol=1e-5)
    other = build(case, num_classes=3)
    info = pretrained.load_weights(other, tmp_path / "m.keras")
    assert info["head_loaded"] is False and info["tensors"] == 100


def test_weights_h5_of_another_architecture_fails_and_keeps_weights(checkpoints, tmp_path):
    case = checkpoints["resnet18"]
    save_weights(build(case), tmp_path / "m.weights.h5")
    model = build(case, num_classes=3)
    before = snapshot(model)
    with pytest.raises(ValueError, match="do not fit"):
        pretrained.load_weights(model, tmp_path / "m.weights.h5")
    assert_unchanged(model, before)


# ------------------------------------------------------------------ bad input: clear errors, model unchanged


@pytest.fixture(scope="module")
def target(checkpoints):
    """A ResNet-18 that the failing loads must leave exactly as it is."""
    return build(checkpoints["resnet18"])


def _deep_stem(state, tiered=False):
    """timm's deep stem (conv1.0 ... conv1.6, 32-32-64) in place of the 7x7; `tiered`: 24-32-64."""
    state = {k: v for k, v in state.items() if k != "conv1.weight"}
    first = 24 if tiered else 32
    for key, shape in (("conv1.0", (first, 3, 3, 3)), ("conv1.3", (32, first, 3, 3)), ("conv1.6", (64, 32, 3, 3))):
        state[f"{key}.weight"] = np.zeros(shape, np.float32)
    for key, channels in (("conv1.1", first), ("conv1.4", 32)):
        for param in ("weight", "bias", "running_mean", "running_var"):
            state[f"{key}.{param}"] = np.ones(channels, np.float32)
    return state


def _bottleneck_first(state, conv1, conv2, conv3):
    state = dict(state)
    for k, shape in zip((1, 2, 3), (conv1, conv2, conv3)):
        state[f"layer1.0.conv{k}.weight"] = np.zeros(shape, np.float32)
    return state


def _timm_resnetv2(stem="stem.conv.weight", stem_shape=(64, 3, 7, 7)):
    """The first tensors of a timm BiT resnetv2_50x1_bit state dict (GroupNorm: no running statistics)."""
    shapes = {stem: stem_shape, "stages.0.blocks.0.downsample.conv.weight": (256, 64, 1, 1),
              "stages.0.blocks.0.norm1.weight": (64,), "stages.0.blocks.0.conv1.weight": (64, 64, 1, 1)}
    return {k: np.zeros(v, np.float32) for k, v in shapes.items()}


def _timm_resnetv2_18(state):
    """timm's resnetv2_18 (pre-activation), as the reference of tests/timm_reference.py writes it."""
    import timm_reference

    return numpy_state(timm_reference.create_model("resnetv2_18", num_classes=CLASSES))


BAD = {  # name: (case whose state to start from, mutation, substrings of the message)
    "missing": ("resnet18", lambda s: {k: v for k, v in s.items() if k != "layer3.1.bn2.running_var"},
                ["missing tensor layer3.1.bn2.running_var", "(256,)"]),
    "unexpected": ("resnet18", lambda s: {**s, "layer1.0.extra.weight": np.zeros((3, 3), np.float32)},
                   ["unexpected tensor layer1.0.extra.weight", "(3, 3)"]),
    "shape": ("resnet18", lambda s: {**s, "layer4.1.conv2.weight": np.zeros((512, 512, 1, 1), np.float32)},
              ["layer4.1.conv2.weight", "(512, 512, 1, 1) in the file", "(512, 512, 3, 3) in the model"]),
    "depth": ("resnet50", lambda s: s, ["resnet50", "depth=50", "layer1.0.conv3.weight"]),
    "resnetv2_bit": ("resnet18", lambda s: _timm_resnetv2(),
                     ["timm ResNetV2 without BatchNorm statistics", "resnetv2_50x1_bit", "weight-standardised",
                      "stages.0.blocks.0.norm1.weight: shape (64,)"]),
    "resnetv2_deep": ("resnet18", lambda s: _timm_resnetv2("stem.conv1.weight", (32, 3, 3, 3)),
                      ["deep or tiered stem", "resnetv2_50d", "stem.conv1.weight: shape (32, 3, 3, 3)"]),
    # timm's pre-activation layout loads into the pre-activation model of its name, not into resnet18
    "resnetv2_18": ("resnet18", _timm_resnetv2_18, ["resnetv2_18 in timm ResNetV2's layout", "variant='preact'",
                                                    "build('resnetv2_18')"]),
    # the ResNet family loads into the model built for it; another model is told which one to build
    "deep_stem": ("resnet18", _deep_stem, ["stem='deep'", "conv1.0.weight (32, 3, 3, 3)", "build('resnet18c')"]),
    "tiered_stem": ("resnet18", lambda s: _deep_stem(s, tiered=True),
                    ["tiered stem", "resnet26t", "conv1.0.weight", "(24, 3, 3, 3)", "Supported"]),
    "wide": ("resnet50", lambda s: _bottleneck_first(s, (128, 64, 1, 1), (128, 128, 3, 3), (256, 128, 1, 1)),
             ["wide_resnet50_2", "width_per_group=128", "layer1.0.conv2.weight (128, 128, 3, 3)"]),
    "resnext": ("resnet50", lambda s: _bottleneck_first(s, (128, 64, 1, 1), (128, 4, 3, 3), (256, 128, 1, 1)),
                ["resnext50_32x4d", "groups=32", "width_per_group=4", "layer1.0.conv2.weight (128, 4, 3, 3)"]),
    "eca": ("resnet18", lambda s: {**s, "layer1.0.se.conv.weight": np.zeros((1, 1, 3), np.float32)},
            ["other than squeeze-and-excitation", "ecaresnet50d", "layer1.0.se.conv.weight"]),
    "no_statistics": ("resnet18", lambda s: {k: v for k, v in s.items() if "running" not in k},
                      ["without BatchNorm statistics", "layer1.0.bn1.weight"]),
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_bad_checkpoint_raises_naming_tensor_and_keeps_weights(checkpoints, target, tmp_path, bad):
    name, mutate, expected = BAD[bad]
    path = str(tmp_path / "bad.safetensors")
    safetensors_numpy.save_file(mutate(checkpoints[name]["state"]), path)
    before = snapshot(target)
    with pytest.raises(ValueError) as error:
        pretrained.load_weights(target, path)
    for text in expected + ["the model keeps its weights"]:
        assert text in str(error.value), (text, str(error.value))
    assert_unchanged(target, before)


def test_preact_model_is_refused_naming_the_variant(checkpoints):
    model = build(checkpoints["resnet18"], variant="preact")
    before = snapshot(model)
    with pytest.raises(ValueError, match="needs variant='v1.5'; the model has variant='preact'"):
        pretrained.load_weights(model, checkpoints["resnet18"]["safetensors"])
    assert_unchanged(model, before)


def test_small_input_stem_asks_for_a_larger_input(checkpoints):
    model = build(checkpoints["resnet18"], input_shape=(32, 32, 3))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"small-input stem.*at least 64 pixels.*\(224, 224, 3\).*resize"):
        pretrained.load_weights(model, checkpoints["resnet18"]["safetensors"])
    assert_unchanged(model, before)


def test_pth_without_torch_says_how_to_convert(checkpoints, target, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    convert = r"(?s)needs torch.*safetensors.torch import save_file.*\.safetensors"
    with pytest.raises(ImportError, match=convert):
        pretrained.load_weights(target, checkpoints["resnet18"]["pth"])


def test_bad_sources_and_models_raise(checkpoints, target, tmp_path):
    with pytest.raises(FileNotFoundError, match="No such checkpoint file"):
        pretrained.load_weights(target, tmp_path / "nowhere.pth")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="Unknown checkpoint format"):
        pretrained.load_weights(target, tmp_path / "weights.npz")
    with pytest.raises(TypeError, match="source"):
        pretrained.load_weights(target, 42)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="keras_resnet.build"):
        pretrained.load_weights(other, checkpoints["resnet18"]["pth"])


# ------------------------------------------------------------------ Hub names, offline


def _cached_repo(cache, repo_id, files):
    """Lays out a repository in a huggingface_hub cache: blobs, refs/main and a snapshot of links."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / commit).mkdir(parents=True)
    for filename, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(f"../../blobs/{blob}", repo / "snapshots" / commit / filename)


def test_hub_name_loads_offline_from_the_cache(checkpoints, tmp_path, monkeypatch):
    case = checkpoints["resnet18"]
    config = {"architecture": "resnet18", "num_classes": CLASSES,
              "pretrained_cfg": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}}
    with open(case["safetensors"], "rb") as f:
        files = {"model.safetensors": f.read(), "config.json": json.dumps(config).encode()}
    _cached_repo(tmp_path / "hub", "timm/resnet18.test", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("timm/resnet18.test", "hf-hub:timm/resnet18.test"):
        model = build(case)
        info = pretrained.load_weights(model, name)
        assert info["kind"] == "hub" and info["architecture"] == "resnet18" and info["head_loaded"]
        assert info["mean"] == [0.4, 0.5, 0.6] and info["std"] == [0.2, 0.25, 0.3]
        assert relative_error(model.predict(checkpoints["x"], verbose=0), case["logits"]) < TOLERANCE
    assert pretrained.normalization_of("timm/resnet18.test")["mean"] == [0.4, 0.5, 0.6]
    with pytest.raises(FileNotFoundError) as error:
        pretrained.load_weights(build(case), "timm/resnet99.missing")
    for text in ("timm/resnet99.missing", str(tmp_path / "hub"), "HF_HUB_OFFLINE", "local file"):
        assert text in str(error.value)


def test_normalization_comes_from_config_json_or_imagenet(checkpoints, tmp_path):
    assert pretrained.normalization_of(checkpoints["resnet18"]["pth"]) == {
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "from": "torchvision's ImageNet statistics"}
    os.symlink(checkpoints["resnet18"]["safetensors"], tmp_path / "model.safetensors")
    config = {"architecture": "resnet18", "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    for source in (tmp_path, tmp_path / "model.safetensors"):  # a folder, or the file with config.json beside
        assert pretrained.normalization_of(source)["std"] == [0.25] * 3


@pytest.mark.parametrize("ext, what", [("safetensors", ".safetensors file"), ("pth", "PyTorch checkpoint")])
def test_a_truncated_checkpoint_is_one_error_naming_the_file(tmp_path, ext, what):
    from safetensors.numpy import save_file

    tensors = {"fc.weight": np.ones((10, 64), np.float32), "fc.bias": np.zeros(10, np.float32)}
    whole = tmp_path / f"whole.{ext}"
    if ext == "safetensors":
        save_file(tensors, str(whole))
    else:
        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, whole)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    model = keras_resnet.build(depth=18, width=0.25, input_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(ValueError, match=rf"'{cut}' is not a readable {what}.*\(truncated or corrupt\?\)"):
        pretrained.load_weights(model, cut)
