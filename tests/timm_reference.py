"""timm's ResNet, written here in PyTorch with timm's module layout and state_dict names.

What timm's ``resnet.py`` builds for the names of `keras_resnet.list_models()` (timm and torchvision
are not installed here): a 7x7 or deep stem (``stem_type="deep"``: conv1.0/.1/.3/.4/.6), basic or
bottleneck blocks with ``cardinality`` and ``base_width`` (ResNeXt, wide ResNets), the SE module of
``timm.layers.SEModule`` as ``layerX.Y.se`` after the last BatchNorm, and the average-pool shortcut
(``downsample = AvgPool2d(2, ceil_mode=True, count_include_pad=False), conv, BN``). torchvision's
ResNets are the same network with the default stem and shortcut and the same tensor names.

And what timm's ``resnetv2.py`` builds for ``resnetv2_18`` ... ``resnetv2_152`` (``conv_layer=create_conv2d``,
``norm_layer=BatchNormAct2d``): the pre-activation ``PreActBasic``/``PreActBottleneck`` (the stride on
the 3x3, the shortcut's 1x1 ``downsample.conv`` on the normalised input), a stem of the 7x7
convolution and ``MaxPool2d(3, 2, padding=1)`` alone, a final ``norm`` and a 1x1-convolution
classifier ``head.fc``.
"""

import math
from collections import OrderedDict

import torch
from torch import nn


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """timm.layers.make_divisible."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class SEModule(nn.Module):
    """timm.layers.SEModule: fc1 (1x1 conv with bias), ReLU, fc2, sigmoid gate."""

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_divisor=8):
        super().__init__()
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * torch.sigmoid(x_se)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, cardinality=1, base_width=64, attn=None):
        super().__init__()
        assert cardinality == 1 and base_width == 64, "BasicBlock only supports cardinality 1, base_width 64"
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SEModule(planes) if attn == "se" else None
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        if self.se is not None:
            x = self.se(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, cardinality=1, base_width=64, attn=None):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = SEModule(outplanes) if attn == "se" else None
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


def downsample_conv(inplanes, outplanes, stride):
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))


def downsample_avg(inplanes, outplanes, stride):
    pool = nn.Identity() if stride == 1 else nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, 1, bias=False), nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    """timm.models.resnet.ResNet (BatchNorm, ReLU, no dilation, no drop path)."""

    def __init__(self, block, layers, num_classes=1000, cardinality=1, base_width=64, stem_width=64,
                 stem_type="", avg_down=False, attn=None):
        super().__init__()
        deep = "deep" in stem_type
        inplanes = stem_width * 2 if deep else 64
        if deep:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, inplanes, 3, stride=1, padding=1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        down = downsample_avg if avg_down else downsample_conv
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if i == 1 else 2
            outplanes = planes * block.expansion
            downsample = down(inplanes, outplanes, stride) if stride != 1 or inplanes != outplanes else None
            blocks = []
            for b in range(count):
                blocks.append(block(inplanes, planes, stride if b == 0 else 1, downsample if b == 0 else None,
                                    cardinality, base_width, attn))
                inplanes = outplanes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def forward_features(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(torch.flatten(self.global_pool(self.forward_features(x)), 1))


_DEPTHS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
           101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}
# timm's (and torchvision's) registered models, as timm's resnet.py writes their arguments
TIMM_ARGS = {
    **{f"resnet{d}": {"depth": d} for d in _DEPTHS},
    **{f"resnet{d}c": {"depth": d, "stem_width": 32, "stem_type": "deep"} for d in _DEPTHS},
    **{f"resnet{d}d": {"depth": d, "stem_width": 32, "stem_type": "deep", "avg_down": True} for d in _DEPTHS},
    **{f"seresnet{d}": {"depth": d, "attn": "se"} for d in _DEPTHS},
    "resnext50_32x4d": {"depth": 50, "cardinality": 32, "base_width": 4},
    "resnext101_32x8d": {"depth": 101, "cardinality": 32, "base_width": 8},
    "resnext101_64x4d": {"depth": 101, "cardinality": 64, "base_width": 4},
    "seresnext50_32x4d": {"depth": 50, "cardinality": 32, "base_width": 4, "attn": "se"},
    "wide_resnet50_2": {"depth": 50, "base_width": 128},
    "wide_resnet101_2": {"depth": 101, "base_width": 128},
}


# ------------------------------------------------------------------ timm's resnetv2.py


class BatchNormAct2d(nn.BatchNorm2d):
    """timm.layers.BatchNormAct2d with ReLU: BatchNorm's tensors, then the activation."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class DownsampleConv(nn.Module):
    """The pre-activation projection: a strided 1x1 convolution, no norm."""

    def __init__(self, in_chs, out_chs, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(x))


class PreActBasic(nn.Module):
    def __init__(self, in_chs, out_chs, stride=1, project=False):
        super().__init__()
        needed = project and (stride != 1 or in_chs != out_chs)
        self.downsample = DownsampleConv(in_chs, out_chs, stride) if needed else None
        self.norm1 = BatchNormAct2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.norm2 = BatchNormAct2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        return x + shortcut


class PreActBottleneck(nn.Module):
    def __init__(self, in_chs, out_chs, stride=1, project=False):
        super().__init__()
        mid_chs = make_divisible(out_chs * 0.25)
        self.downsample = DownsampleConv(in_chs, out_chs, stride) if project else None
        self.norm1 = BatchNormAct2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.norm2 = BatchNormAct2d(mid_chs)
        self.conv2 = nn.Conv2d(mid_chs, mid_chs, 3, stride, 1, bias=False)  # the stride on the 3x3
        self.norm3 = BatchNormAct2d(mid_chs)
        self.conv3 = nn.Conv2d(mid_chs, out_chs, 1, bias=False)

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return x + shortcut


class ResNetStage(nn.Module):
    def __init__(self, in_chs, out_chs, stride, depth, block_fn):
        super().__init__()
        self.blocks = nn.Sequential(*[block_fn(in_chs if b == 0 else out_chs, out_chs, stride if b == 0 else 1,
                                               project=b == 0) for b in range(depth)])

    def forward(self, x):
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """timm.layers.ClassifierHead(use_conv=True): average pool, a 1x1 convolution, flatten."""

    def __init__(self, in_chs, num_classes):
        super().__init__()
        self.fc = nn.Conv2d(in_chs, num_classes, 1, bias=True)

    def forward(self, x):
        return torch.flatten(self.fc(x.mean((2, 3), keepdim=True)), 1)


class ResNetV2(nn.Module):
    """timm.models.resnetv2.ResNetV2 (preact=True, stem_type="", BatchNormAct2d, no dilation)."""

    def __init__(self, layers, channels=(256, 512, 1024, 2048), basic=False, num_classes=1000, stem_chs=64):
        super().__init__()
        # the stem is the convolution and PyTorch's max-pool, which pads with -inf
        self.stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, stem_chs, 7, 2, 3, bias=False),
                                              pool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
        block_fn = PreActBasic if basic else PreActBottleneck
        self.stages, prev_chs = nn.Sequential(), stem_chs
        for i, (depth, out_chs) in enumerate(zip(layers, channels)):
            self.stages.add_module(str(i), ResNetStage(prev_chs, out_chs, 1 if i == 0 else 2, depth, block_fn))
            prev_chs = out_chs
        self.norm = BatchNormAct2d(prev_chs)
        self.head = ClassifierHead(prev_chs, num_classes)

    def forward(self, x):
        return self.head(self.norm(self.stages(self.stem(x))))


_BASIC_V2 = {"channels": (64, 128, 256, 512), "basic": True}
RESNETV2_ARGS = {
    "resnetv2_18": {"layers": (2, 2, 2, 2), **_BASIC_V2},
    "resnetv2_34": {"layers": (3, 4, 6, 3), **_BASIC_V2},
    "resnetv2_50": {"layers": (3, 4, 6, 3)},
    "resnetv2_101": {"layers": (3, 4, 23, 3)},
    "resnetv2_152": {"layers": (3, 8, 36, 3)},
}


def create_model(name=None, layers=None, block=None, **kwargs):
    """timm.create_model(name) for the names above; or a custom `layers` list of `block`s (a ResNetV2
    for the pre-activation blocks, whose `channels` are then the stages' output channels)."""
    if name in RESNETV2_ARGS:
        return ResNetV2(**RESNETV2_ARGS[name], **kwargs)
    if block in (PreActBasic, PreActBottleneck):
        return ResNetV2(layers, basic=block is PreActBasic, **kwargs)
    if name is not None:
        kwargs = {**TIMM_ARGS[name], **kwargs}
        block, layers = _DEPTHS[kwargs.pop("depth")]
    return ResNet(block, layers, **kwargs)
