"""Parameter and MAC counts (`summarize`, `count_macs`) and the `keras-resnet summary` command."""

import json

import keras
import pytest

from keras_resnet import BottleneckBlock, build, config_of, count_macs, summarize
from keras_resnet.cli import main
from keras_resnet.models.summary import format_summary

# torchvision's figures at 224x224x3 (its "GFLOPS" column counts multiply-accumulates)
TORCHVISION_GMACS = {18: 1.81, 50: 4.09}
# ours, exactly
MACS = {18: 1_814_073_344, 50: 4_089_184_256}
TRAINABLE = {18: 11_689_512, 50: 25_557_032}


@pytest.fixture(scope="module")
def imagenet_models():
    """ResNet-18 and -50 at 224x224x3, built once for the module (never run)."""
    return {depth: build(depth) for depth in TORCHVISION_GMACS}


def run_cli(argv):
    """The exit code of `keras-resnet ARGV`: what `main` returns, or the code argparse exits with."""
    try:
        return main(argv) or 0
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("depth", sorted(TORCHVISION_GMACS))
def test_macs_at_224_match_torchvision_within_one_percent(imagenet_models, depth):
    macs = count_macs(imagenet_models[depth])
    assert macs == MACS[depth]
    assert abs(macs / 1e9 - TORCHVISION_GMACS[depth]) / TORCHVISION_GMACS[depth] < 0.01


@pytest.mark.parametrize("depth", sorted(TORCHVISION_GMACS))
def test_summarize_reports_name_shape_parameters_and_macs(imagenet_models, depth):
    model = imagenet_models[depth]
    info = summarize(model)
    assert info == {
        "name": f"resnet{depth}",
        "input_shape": [224, 224, 3],
        "params": model.count_params(),
        "trainable_params": TRAINABLE[depth],
        "macs": MACS[depth],
    }
    # the rest are the BatchNorm moving statistics: two per channel of every BatchNorm
    moving = sum(2 * w.shape[0] for w in model.non_trainable_weights if w.path.endswith("moving_mean"))
    assert len(model.non_trainable_weights) == 2 * sum(w.path.endswith("moving_mean") for w in model.weights)
    assert info["params"] - info["trainable_params"] == moving
    json.dumps(info)  # plain Python numbers


def test_count_macs_matches_a_hand_count():
    # blocks=(1, 1, 1) at width 0.25 on 8x8x1: stages of 4, 8, 16 channels at 8x8, 4x4, 2x2.
    model = build(blocks=(1, 1, 1), width=0.25, input_shape=(8, 8, 1), num_classes=10)
    stem = 8 * 8 * 9 * 1 * 4
    stage1 = 2 * (8 * 8 * 9 * 4 * 4)
    stage2 = 4 * 4 * 9 * 4 * 8 + 4 * 4 * 9 * 8 * 8 + 4 * 4 * 4 * 8  # conv1, conv2, 1x1 projection
    stage3 = 2 * 2 * 9 * 8 * 16 + 2 * 2 * 9 * 16 * 16 + 2 * 2 * 8 * 16
    head = 16 * 10
    assert count_macs(model) == stem + stage1 + stage2 + stage3 + head == 49_568


def test_bottleneck_block_macs_count_its_three_convolutions_and_projection():
    identity = BottleneckBlock(16)
    identity.build((None, 8, 8, 64))
    # 1x1 64->16, 3x3 16->16, 1x1 16->64 at 8x8; no projection
    assert identity.macs((None, 8, 8, 64)) == 64 * (64 * 16 + 9 * 16 * 16 + 16 * 64)
    strided = BottleneckBlock(16, strides=2)
    strided.build((None, 8, 8, 32))
    # 1x1 at 8x8, then 3x3 (stride 2), 1x1 and the 1x1 projection at 4x4
    assert strided.macs((None, 8, 8, 32)) == 64 * 32 * 16 + 16 * (9 * 16 * 16 + 16 * 64 + 32 * 64)


def test_count_macs_descends_into_nested_models():
    inner = build(20, width=0.25, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    inputs = keras.Input((32, 32, 3))
    outer = keras.Model(inputs, keras.layers.Dense(5)(inner(inputs)))
    assert count_macs(outer) == count_macs(inner) + 16 * 5


def test_count_macs_scales_with_the_input_area():
    macs = {side: count_macs(build(20, input_shape=(side, side, 3), include_top=False))
                  for side in (32, 64)}
    assert macs[64] == 4 * macs[32]


def test_format_summary_shows_parameters_and_gmacs(imagenet_models):
    line = format_summary(summarize(imagenet_models[50]))
    assert "resnet50" in line and "25,557,032 trainable" in line and "4.089 GMACs" in line


def test_cli_summary_prints_parameters_and_gmacs(capsys):
    assert run_cli(["summary", "--depth", "50"]) == 0
    out = capsys.readouterr().out
    assert "25,557,032" in out and "4.089 GMACs" in out


def test_cli_summary_json_prints_the_summary_dict(capsys):
    assert run_cli(["summary", "--depth", "20", "--input-shape", "28,28,1", "--num-classes", "10",
                    "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = build(20, input_shape=(28, 28, 1), num_classes=10)
    assert info.pop("build") == json.loads(json.dumps(config_of(model)))  # the architecture, as JSON
    assert info == summarize(model)
    assert info["name"] == "resnet20" and info["input_shape"] == [28, 28, 1]


def test_cli_summary_bad_depth_exits_2_with_a_one_line_error(capsys):
    assert run_cli(["summary", "--depth", "19"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "depth=19" in lines[0] and "blocks=" in lines[0]
    assert captured.out == ""
