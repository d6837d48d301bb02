"""A checkpoint checked against a model, then assigned: nothing is written unless every check passes.

`load_state_dict` reads the checkpoint's architecture (`keras_resnet.weights.layout`), checks it against
the model (`model_problems`), then every tensor's name and shape (`plan_assignment`), and assigns only
when all checks pass, so that on any error the model keeps the weights it had.
"""

import numpy as np

from keras_resnet import models
from keras_resnet.weights.layout import (
    HEAD_KEYS,
    PARAMS,
    RESNETV2,
    in_file_layout,
    key_function,
    read_architecture,
    to_keras,
)


def model_problems(model, config, arch):
    """Why the model cannot take the checkpoint's architecture (empty when it can)."""
    problems = []
    name = f" or build({arch['name']!r})" if arch["name"] in models.ARCHITECTURES else ""
    if config["variant"] != arch["variant"]:
        problems.append(f"the checkpoint is {arch['name']} in {arch['layout']}'s layout, which needs "
                        f"variant={arch['variant']!r}; the model has variant={config['variant']!r}: build it "
                        f"with variant={arch['variant']!r}{name}")
    if (config["block"], config["blocks"]) != (arch["block"], arch["blocks"]):
        depth = models.block_depth(arch["block"], arch["blocks"])
        how = (f"depth={depth}" if models.IMAGENET_DEPTHS.get(depth) == (arch["block"], arch["blocks"])
               else f"block={arch['block']!r}, blocks={arch['blocks']}")
        conv3 = "stages.0.blocks.0.conv3.weight" if arch["layout"] == RESNETV2 else "layer1.0.conv3.weight"
        evidence = f"{conv3} {'present' if arch['block'] == 'bottleneck' else 'absent'}"
        problems.append(f"the checkpoint is {arch['name']} ({arch['block']} blocks per stage "
                        f"{arch['blocks']}: {evidence}); the model is {model.name} ({config['block']} "
                        f"blocks {config['blocks']}): build it with {how}")
    for key in ("stem", "shortcut", "attention", "groups", "width_per_group"):
        if config[key] != arch[key]:
            problems.append(f"the checkpoint has {key}={arch[key]!r} ({arch['evidence'][key]}); the model has "
                            f"{key}={config[key]!r}: build it with {key}={arch[key]!r}{name}")
    if config["stem_width"] != arch["stem_width"]:
        problems.append(f"the checkpoint's stem has {arch['stem_width']} filters "
                        f"({arch['evidence']['stem_width']}), width={arch['stem_width'] / 64:g} of the standard "
                        f"64; the model has width={config['width']} (stem_width={config['stem_width']}): "
                        f"build it with width={arch['stem_width'] / 64:g}")
    if "stem_pool" not in [layer.name for layer in model.layers]:
        stem = tuple(model.get_layer("stem_conv").kernel.shape)
        problems.append(
            f"the model has the small-input stem (stem_conv {stem}: 3x3 stride 1, no max-pool), which "
            f"build() picks for inputs under {models.SMALL_INPUT} pixels (input_shape="
            f"{config['input_shape']}); "
            "a pretrained network keeps its ImageNet stem (7x7 stride 2 and max-pool): build with "
            f"image_size/input_shape of at least {models.SMALL_INPUT} pixels a side, e.g. "
            "input_shape=(224, 224, 3), and resize the images up")
    return problems


def head_decision(config, file_classes, name):
    """``(load_head, note)``: the classifier is loaded only when the model's matches the checkpoint's."""
    if not config["include_top"]:
        return False, f"include_top=False: loaded the backbone of {name}; its classifier is not used"
    if file_classes is None:
        return False, (f"the checkpoint has no classifier: loaded the backbone of {name}; the classifier "
                       f"'logits' ({config['num_classes']} classes) keeps its fresh initialisation")
    if file_classes != config["num_classes"]:
        return False, (f"loaded the backbone of {name}; the classifier 'logits' ({config['num_classes']} "
                       f"classes) keeps its fresh initialisation (the checkpoint's has {file_classes})")
    return True, None


def plan_assignment(model, arrays, key_of, file_shape_of, load_head, ignored=()):
    """``([(variable, key)], problems)``: every model variable's tensor, or what is wrong (names, shapes)."""
    plan, problems, used = [], [], set()
    for var in model.weights:
        if var.path.split("/")[-1] not in PARAMS:
            continue  # not a weight (e.g. a seed generator's state)
        if var.path.startswith("logits/") and not load_head:
            continue
        key = key_of(var.path)
        want = file_shape_of(var.shape)
        if key is None:
            problems.append(f"the model's {var.path} {tuple(var.shape)} has no counterpart in the checkpoint")
        elif key not in arrays:
            problems.append(f"missing tensor {key}: the model's {var.path} needs shape {want}")
        else:
            used.add(key)
            if tuple(arrays[key].shape) != want:
                problems.append(f"shape mismatch for {key}: {tuple(arrays[key].shape)} in the file, {want} "
                                f"in the model ({var.path}, {tuple(var.shape)} in Keras layout)")
            else:
                plan.append((var, key))
    for key in sorted(set(arrays) - used):
        if not (key.endswith("num_batches_tracked") or key in ignored):
            problems.append(f"unexpected tensor {key} {tuple(arrays[key].shape)}: the model has no place "
                            "for it")
    return plan, problems


def raise_problems(source, headline, problems, limit=12):
    lines = problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])
    raise ValueError(f"{source}: {headline}. Nothing was loaded; the model keeps its weights.\n  - "
                     + "\n  - ".join(lines))


def assign(plan, arrays, convert):
    """Assigns every planned tensor; called only once all checks have passed."""
    for var, key in plan:
        var.assign(np.asarray(convert(arrays[key]), dtype=var.dtype))
    return len(plan)


def load_state_dict(model, arrays, source):
    """Checks a torchvision state dict (NumPy arrays) against the model, then assigns it.

    Returns ``(architecture, tensors assigned, head loaded, transfer note or None)``.
    """
    config = models.config_of(model)
    try:
        arch = read_architecture({k: v.shape for k, v in arrays.items()})
    except ValueError as e:
        raise ValueError(f"{source}: {e} Nothing was loaded; the model keeps its weights.") from None
    problems = model_problems(model, config, arch)
    if problems:
        raise_problems(source, f"the checkpoint ({arch['name']}) does not fit the model {model.name}",
                       problems)
    if arch["layout"] == RESNETV2 and arrays.get("head.fc.weight", np.zeros(())).ndim == 4:
        arrays = {**arrays, "head.fc.weight": arrays["head.fc.weight"][:, :, 0, 0]}  # a 1x1 conv: a Dense
    load_head, note = head_decision(config, arch["num_classes"], arch["name"])
    plan, problems = plan_assignment(model, arrays, key_function(config), in_file_layout, load_head,
                                     ignored=() if load_head else HEAD_KEYS[arch["layout"]])
    if problems:
        raise_problems(source, f"{len(problems)} tensor(s) of the checkpoint ({arch['name']}) do not fit "
                               f"the model {model.name}", problems)
    return arch, assign(plan, arrays, to_keras), load_head, note
