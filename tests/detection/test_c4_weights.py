"""The published checkpoint formats (MILVLG .pth, airsplay .pkl) load strictly into C4Detector and
give the same outputs; key names and shapes follow each project's model code (detectron2 names)."""

import pickle

import numpy as np
import pytest
import torch

from updown_vqa.core.errors import UpdownError
from updown_vqa.detection.c4 import C4Detector
from updown_vqa.detection.caffe_weights import (
    AIRSPLAY,
    MILVLG,
    checkpoint_format,
    convert,
    load_published,
    mismatches,
)

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def d2_keys(fmt, depth=101, width=64, classes=1600, attributes=400):
    """{name: shape} of a checkpoint as detectron2 (airsplay) / MILVLG's bua code name it."""
    keys = {"backbone.stem.conv1.weight": (width, 3, 7, 7)}
    norm = ("weight", "bias", "running_mean", "running_var")
    keys |= {f"backbone.stem.conv1.norm.{p}": (width,) for p in norm}
    cin = width
    for stage in range(4):
        mid, out = width * 2**stage, width * 4 * 2**stage
        prefix = "roi_heads.res5" if stage == 3 else f"backbone.res{stage + 2}"
        for block in range(BLOCKS[depth][stage]):
            name = f"{prefix}.{block}"
            convs = {"conv1": (mid, cin if block == 0 else out, 1, 1), "conv2": (mid, mid, 3, 3),
                     "conv3": (out, mid, 1, 1)}
            if block == 0:
                convs["shortcut"] = (out, cin, 1, 1)
            for conv, shape in convs.items():
                keys[f"{name}.{conv}.weight"] = shape
                keys |= {f"{name}.{conv}.norm.{p}": (shape[0],) for p in norm}
                if fmt == MILVLG:  # detectron2 BatchNorm2d ("BN")
                    keys[f"{name}.{conv}.norm.num_batches_tracked"] = ()
        cin = out
    c4 = width * 16
    anchors = 24 if fmt == MILVLG else 12
    keys |= {"proposal_generator.rpn_head.conv.weight": (512, c4, 3, 3),
             "proposal_generator.rpn_head.conv.bias": (512,),
             "proposal_generator.rpn_head.objectness_logits.weight": (anchors, 512, 1, 1),
             "proposal_generator.rpn_head.objectness_logits.bias": (anchors,),
             "proposal_generator.rpn_head.anchor_deltas.weight": (48, 512, 1, 1),
             "proposal_generator.rpn_head.anchor_deltas.bias": (48,)}
    feature, n = width * 32, classes + 1
    heads = {MILVLG: ("cls_embed", "attr_linear1", "attr_linear2"),
             AIRSPLAY: ("cls_embedding", "fc_attr", "attr_score")}[fmt]
    boxes = 4 * n if fmt == MILVLG else 4 * classes
    p = "roi_heads.box_predictor"
    keys |= {f"{p}.cls_score.weight": (n, feature), f"{p}.cls_score.bias": (n,),
             f"{p}.bbox_pred.weight": (boxes, feature), f"{p}.bbox_pred.bias": (boxes,),
             f"{p}.{heads[0]}.weight": (n, 256), f"{p}.{heads[1]}.weight": (512, feature + 256),
             f"{p}.{heads[1]}.bias": (512,), f"{p}.{heads[2]}.weight": (attributes + 1, 512),
             f"{p}.{heads[2]}.bias": (attributes + 1,)}
    return keys


@pytest.mark.parametrize("fmt", [MILVLG, AIRSPLAY])
def test_full_size_published_names_and_shapes_match_the_r101_model(fmt):
    with torch.device("meta"):
        model = C4Detector()  # depth 101, 1601 classes, 401 attributes: the published model
        state = {k: torch.empty(s) for k, s in d2_keys(fmt).items()}
    assert checkpoint_format(state, "x") == fmt
    assert mismatches(model.state_dict(), convert(state, fmt)) == []


def test_a_wrong_depth_names_each_unmatched_key_with_both_shapes():
    with torch.device("meta"):
        model = C4Detector(depth=50)
        state = convert({k: torch.empty(s) for k, s in d2_keys(MILVLG).items()}, MILVLG)
    problems = mismatches(model.state_dict(), state)
    assert "trunk.res4.22.conv1.weight (256, 1024, 1, 1) not in the model" in problems
    with torch.device("meta"):
        model = C4Detector(num_classes=81)
    problems = mismatches(model.state_dict(), state)
    assert "cls_score.weight (1601, 2048) in the file, (81, 2048) in the model" in problems


SMALL = {"depth": 50, "width": 8, "num_classes": 6, "num_attributes": 5}


def as_milvlg(ours):
    """A MILVLG checkpoint of our weights: our names back to bua's, a 2 x 12 softmax objectness."""
    inverse = {}
    for key, value in ours.items():
        name = ("backbone." + key[len("trunk."):]) if key.startswith("trunk.") else key
        name = name.replace("backbone.stem.conv.", "backbone.stem.conv1.")
        name = name.replace("backbone.stem.norm.", "backbone.stem.conv1.norm.")
        name = name.replace("res5.", "roi_heads.res5.") if name.startswith("res5.") else name
        for j in (1, 2, 3):
            name = name.replace(f".norm{j}.", f".conv{j}.norm.")
        name = name.replace(".shortcut_norm.", ".shortcut.norm.")
        name = name.replace("rpn.objectness.", "proposal_generator.rpn_head.objectness_logits.")
        name = name.replace("rpn.deltas.", "proposal_generator.rpn_head.anchor_deltas.")
        name = name.replace("rpn.conv.", "proposal_generator.rpn_head.conv.")
        for ours_head, theirs in (("class_embedding", "cls_embed"), ("hidden", "attr_linear1"),
                                  ("score", "attr_linear2")):
            name = name.replace(f"attributes.{ours_head}.", f"roi_heads.box_predictor.{theirs}.")
        for head in ("cls_score", "bbox_pred"):
            name = name.replace(f"{head}.", f"roi_heads.box_predictor.{head}.") if name.startswith(head) else name
        inverse[name] = value.clone()
    for part in ("weight", "bias"):
        key = f"proposal_generator.rpn_head.objectness_logits.{part}"
        background = torch.randn_like(inverse[key])
        inverse[key] = torch.cat([background, inverse[key] + background])
    return inverse


def as_airsplay(milvlg):
    """The same weights in airsplay's layout: sigmoid objectness in size-major anchor order,
    background and "no attribute" last, no background boxes, deltas scaled by 10, 10, 5, 5."""
    out = {k: v.clone() for k, v in milvlg.items()}
    p, rpn = "roi_heads.box_predictor", "proposal_generator.rpn_head"
    order = [r * 4 + s for s in range(4) for r in range(3)]  # detectron2 row (s, r) <- Caffe r*4+s
    for part in ("weight", "bias"):
        logits = milvlg[f"{rpn}.objectness_logits.{part}"]
        out[f"{rpn}.objectness_logits.{part}"] = (logits[12:] - logits[:12])[order]
        deltas = milvlg[f"{rpn}.anchor_deltas.{part}"].reshape(12, 4, -1)
        out[f"{rpn}.anchor_deltas.{part}"] = deltas[order].reshape(milvlg[f"{rpn}.anchor_deltas.{part}"].shape)
        for name in ("cls_score", "attr_linear2"):
            rows = milvlg[f"{p}.{name}.{part}"]
            out[f"{p}.{name}.{part}"] = torch.cat([rows[1:], rows[:1]])
        boxes = milvlg[f"{p}.bbox_pred.{part}"][4:]
        scale = torch.tensor([10.0, 10.0, 5.0, 5.0]).repeat(len(boxes) // 4)
        out[f"{p}.bbox_pred.{part}"] = boxes * scale.view(-1, *[1] * (boxes.dim() - 1))
    embed = milvlg[f"{p}.cls_embed.weight"]
    out[f"{p}.cls_embedding.weight"] = torch.cat([embed[1:], embed[:1]])
    out[f"{p}.fc_attr.weight"], out[f"{p}.fc_attr.bias"] = out.pop(f"{p}.attr_linear1.weight"), \
        out.pop(f"{p}.attr_linear1.bias")
    out[f"{p}.attr_score.weight"], out[f"{p}.attr_score.bias"] = out.pop(f"{p}.attr_linear2.weight"), \
        out.pop(f"{p}.attr_linear2.bias")
    del out[f"{p}.cls_embed.weight"]
    return {k: v.numpy() for k, v in out.items()}


def randomized(**settings):
    torch.manual_seed(0)
    model = C4Detector(**settings, min_box=2, post_nms=20).eval()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.endswith("running_var"):
                value.uniform_(0.5, 2.0)
            elif value.is_floating_point():
                value.normal_(0, 0.3 if "norm" in name else 0.1)
    return model


@pytest.mark.slow
def test_both_formats_load_strictly_and_give_the_same_detections(tmp_path):
    reference = randomized(**SMALL)
    milvlg = as_milvlg(reference.state_dict())
    assert set(milvlg) == set(d2_keys(MILVLG, 50, 8, 5, 4)) - {
        k for k in d2_keys(MILVLG, 50, 8, 5, 4) if k.endswith("num_batches_tracked")}
    torch.save({"model": milvlg, "iteration": 1}, tmp_path / "bua.pth")
    with open(tmp_path / "attr.pkl", "wb") as f:
        pickle.dump({"model": as_airsplay(milvlg), "__author__": "test"}, f)
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    outputs = {}
    for name in ("bua.pth", "attr.pkl"):
        model = C4Detector(**SMALL, min_box=2, post_nms=20).eval()
        assert load_published(model, str(tmp_path / name)) == (MILVLG if name == "bua.pth" else AIRSPLAY)
        outputs[name] = model.detect([image], min_size=64, max_size=100)[0]
    expected = reference.detect([image], min_size=64, max_size=100)[0]
    for out in outputs.values():
        assert torch.allclose(out["boxes"], expected["boxes"], atol=1e-3)
        assert torch.allclose(out["class_probs"], expected["class_probs"], atol=1e-5)
        assert torch.allclose(out["attribute_probs"], expected["attribute_probs"], atol=1e-5)
        assert torch.allclose(out["class_boxes"][:, 1:], expected["class_boxes"][:, 1:], atol=1e-3)


def test_a_pickle_with_anything_but_arrays_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": np.zeros(2)}, "hook": print}, f)
    with pytest.raises(UpdownError, match="evil.pkl.*builtins.print is not a numpy array"):
        load_published(C4Detector(**SMALL), str(path))


def test_resnet_v2_r152_is_refused_clearly(tmp_path):
    torch.save({"model": {"backbone.stem.norm.weight": torch.ones(3)}}, tmp_path / "r152.pth")
    with pytest.raises(UpdownError, match="R152"):
        load_published(C4Detector(**SMALL), str(tmp_path / "r152.pth"))
