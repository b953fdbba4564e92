"""Each piece of the C4 detector against an independent computation following Caffe's conventions."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_pool

from updown_vqa.detection.c4 import C4Detector, caffe_input
from updown_vqa.detection.caffe_boxes import caffe_anchors, clip, decode, legacy_nms
from updown_vqa.detection.caffe_resnet import Bottleneck, Stem
from updown_vqa.detection.selection import select_indices


def randomize(module, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if name.endswith("running_var"):
                value.uniform_(0.5, 2.0)
            elif value.is_floating_point():
                value.normal_(0, 0.2)
    return module.eval()


def affine(x, norm):
    """Caffe's BatchNorm + Scale at test time."""
    scale = norm.weight / torch.sqrt(norm.running_var + 1e-5)
    return x * scale.view(1, -1, 1, 1) + (norm.bias - norm.running_mean * scale).view(1, -1, 1, 1)


def test_bottleneck_puts_the_stride_in_the_first_1x1_convolution():
    block = randomize(Bottleneck(8, 4, 16, stride=2))
    x = torch.randn(1, 8, 9, 9)
    branch = F.relu(affine(F.conv2d(x, block.conv1.weight, stride=2), block.norm1))
    branch = F.relu(affine(F.conv2d(branch, block.conv2.weight, padding=1), block.norm2))
    branch = affine(F.conv2d(branch, block.conv3.weight), block.norm3)
    shortcut = affine(F.conv2d(x, block.shortcut.weight, stride=2), block.shortcut_norm)
    expected = F.relu(branch + shortcut)
    assert expected.shape == (1, 16, 5, 5)
    assert torch.allclose(block(x), expected, atol=1e-5)


def test_stem_max_pool_has_no_padding_and_rounds_up():
    stem = randomize(Stem(4))
    x = torch.randn(1, 3, 24, 28)
    conv = F.relu(affine(F.conv2d(x, stem.conv.weight, stride=2, padding=3), stem.norm))  # 12 x 14
    height, width = conv.shape[-2:]
    out_h, out_w = math.ceil((height - 3) / 2) + 1, math.ceil((width - 3) / 2) + 1  # 6 x 7
    expected = torch.empty(1, 4, out_h, out_w)
    for i in range(out_h):
        for j in range(out_w):  # the last window is cut by the border, never padded
            expected[..., i, j] = conv[..., 2 * i: 2 * i + 3, 2 * j: 2 * j + 3].amax(dim=(-1, -2))
    assert stem(x).shape == (1, 4, 6, 7)  # torchvision's stem (pad 1, floor) would give 6 x 7 too,
    assert torch.allclose(stem(x), expected)  # but different windows
    assert not torch.allclose(stem(x), F.max_pool2d(conv, 3, 2, 1))


def caffe_roi_pool(features, box, size, scale):
    """Caffe's ROIPoolingLayer forward for one box on [C, H, W]."""
    channels, height, width = features.shape
    x1, y1, x2, y2 = (int(math.floor(v * scale + 0.5)) for v in box)  # C round: half up
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    out = torch.zeros(channels, size, size)
    for ph in range(size):
        for pw in range(size):
            hs = min(max(int(math.floor(ph * roi_h / size)) + y1, 0), height)
            he = min(max(int(math.ceil((ph + 1) * roi_h / size)) + y1, 0), height)
            ws = min(max(int(math.floor(pw * roi_w / size)) + x1, 0), width)
            we = min(max(int(math.ceil((pw + 1) * roi_w / size)) + x1, 0), width)
            if he > hs and we > ws:
                out[:, ph, pw] = features[:, hs:he, ws:we].amax(dim=(-1, -2))
    return out


def test_roi_pool_is_caffes_roi_pooling():
    features = torch.randn(3, 12, 15)
    boxes = [(0.0, 0.0, 239.0, 191.0), (17.0, 33.0, 60.5, 100.0), (100.0, 40.0, 118.0, 41.0)]
    pooled = roi_pool(features[None], [torch.tensor(boxes)], 14, 1 / 16)
    for box, ours in zip(boxes, pooled):
        assert torch.allclose(ours, caffe_roi_pool(features, box, 14, 1 / 16))


def test_res5_runs_dilated_at_stride_1_and_the_feature_is_the_mean_of_its_map():
    model = randomize(C4Detector(depth=50, width=4, num_classes=3, num_attributes=3))
    res4 = torch.randn(1, 64, 10, 12)
    boxes = torch.tensor([[0.0, 0.0, 150.0, 120.0], [30.0, 20.0, 90.0, 140.0]])
    x = roi_pool(res4, [boxes], 14, 1 / 16)
    for block in model.res5:
        out = F.relu(affine(F.conv2d(x, block.conv1.weight), block.norm1))
        out = F.relu(affine(F.conv2d(out, block.conv2.weight, padding=2, dilation=2), block.norm2))
        out = affine(F.conv2d(out, block.conv3.weight), block.norm3)
        identity = affine(F.conv2d(x, block.shortcut.weight), block.shortcut_norm) \
            if hasattr(block, "shortcut") else x
        x = F.relu(out + identity)
    assert x.shape == (2, 128, 14, 14)
    assert torch.allclose(model.region_features(res4, [boxes]), x.mean(dim=(2, 3)), atol=1e-5)


def test_anchors_are_caffes_generate_anchors_table():
    expected = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]
    assert caffe_anchors(16, (0.5, 1, 2), (8, 16, 32)).tolist() == expected
    assert caffe_anchors().shape == (12, 4)


def test_decoding_counts_the_extra_pixel_and_clipping_stops_at_the_last_pixel():
    boxes = torch.tensor([[10.0, 20.0, 29.0, 59.0]])  # 20 x 40 pixels, centre (20, 40)
    deltas = torch.tensor([[0.1, -0.2, math.log(2.0), 0.0, 0.0, 0.0, 0.0, 0.0]])
    expected = [[20 + 2 - 20, 40 - 8 - 20, 20 + 2 + 20, 40 - 8 + 20],
                [20 - 10, 40 - 20, 20 + 10, 40 + 20]]  # x2 = ctr + w / 2: no -1, as Caffe
    assert torch.allclose(decode(boxes, deltas).view(2, 4), torch.tensor(expected, dtype=torch.float))
    scaled = decode(boxes, deltas * torch.tensor([10.0, 10, 5, 5] * 2), (10.0, 10, 5, 5))
    assert torch.allclose(scaled, decode(boxes, deltas))
    clipped = clip(torch.tensor([[-5.0, 3.0, 700.0, 480.0]]), 480, 640)
    assert clipped.tolist() == [[0.0, 3.0, 639.0, 479.0]]


def caffe_nms(dets, thresh):
    """py-faster-rcnn's py_cpu_nms: areas and overlaps with +1."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        order = order[np.where(inter / (areas[i] + areas[order[1:]] - inter) <= thresh)[0] + 1]
    return keep


def generate_tsv_rule(boxes, probs, conf=0.2, low=10, high=100):
    """tools/generate_tsv.py: per-class NMS 0.3 on the proposals, max_conf, 10..100 boxes."""
    max_conf = np.zeros(len(boxes))
    for c in range(1, probs.shape[1]):
        keep = caffe_nms(np.hstack([boxes, probs[:, c:c + 1]]).astype(np.float32), 0.3)
        max_conf[keep] = np.where(probs[keep, c] > max_conf[keep], probs[keep, c], max_conf[keep])
    kept = np.where(max_conf >= conf)[0]
    if len(kept) < low:
        kept = np.argsort(max_conf)[::-1][:low]
    elif len(kept) > high:
        kept = np.argsort(max_conf)[::-1][:high]
    return set(kept.tolist())


def test_selection_is_generate_tsv_with_legacy_nms():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 40, (150, 2))
    boxes = np.hstack([xy, xy + rng.uniform(1, 6, (150, 2))])  # small boxes: the +1 matters
    probs = rng.dirichlet(np.full(5, 0.3), 150)
    for low, high, conf in ((10, 100, 0.2), (36, 36, 0.2), (10, 100, 0.9), (10, 20, 0.05)):
        order, scores, classes = select_indices(torch.tensor(boxes), torch.tensor(probs[:, 1:]),
                                                0.3, conf, low, high, pixel_offset=1)
        assert set(order.tolist()) == generate_tsv_rule(boxes, probs, conf, low, high)
        assert (scores[:-1] >= scores[1:]).all()
    plain = select_indices(torch.tensor(boxes), torch.tensor(probs[:, 1:]), 0.3, 0.2, 10, 100)[0]
    assert set(plain.tolist()) != generate_tsv_rule(boxes, probs)  # torchvision NMS differs here
    dets = np.hstack([boxes, probs[:, 1:2]]).astype(np.float32)
    ours = legacy_nms(torch.tensor(dets[:, :4]), torch.tensor(dets[:, 4]), 0.3)
    assert ours.tolist() == caffe_nms(dets, 0.3)


def test_attribute_head_embeds_the_argmax_over_all_classes_background_included():
    model = randomize(C4Detector(depth=50, width=4, num_classes=5, num_attributes=7))
    features = torch.randn(6, 128)
    with torch.no_grad():
        model.cls_score.bias[0] = 5.0  # background wins for most rows
        out = model.heads(features)
        head = model.attributes
        classes = (features @ model.cls_score.weight.T + model.cls_score.bias).argmax(dim=1)
        assert (classes == 0).any()
        x = torch.cat([features, head.class_embedding.weight[classes]], dim=1)
        hidden = torch.clamp(x @ head.hidden.weight.T + head.hidden.bias, min=0)
        expected = hidden @ head.score.weight.T + head.score.bias
    assert out["attribute_logits"].shape == (6, 7) and out["box_deltas"].shape == (6, 20)
    assert torch.allclose(out["attribute_logits"], expected, atol=1e-5)


def bilinear(image, out_h, out_w):
    """OpenCV INTER_LINEAR (half-pixel centres, no antialiasing) on [C, H, W] float."""
    channels, height, width = image.shape

    def taps(out, size):
        src = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, size - 1), src - low

    y0, y1, fy = taps(out_h, height)
    x0, x1, fx = taps(out_w, width)
    top = image[:, y0][:, :, x0] * (1 - fx) + image[:, y0][:, :, x1] * fx
    bottom = image[:, y1][:, :, x0] * (1 - fx) + image[:, y1][:, :, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


def test_rgb_input_becomes_caffes_bgr_mean_subtracted_blob():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (3, 90, 200), dtype=np.uint8)
    blob, scale = caffe_input(torch.from_numpy(rgb), 600, 1000)
    assert scale == 1000 / 200 and blob.shape == (1, 3, 450, 1000)  # longer side capped
    bgr = rgb[::-1].astype(np.float64) - np.array([102.9801, 115.9465, 122.7717])[:, None, None]
    expected = bilinear(bgr, 450, 1000)
    assert np.allclose(blob[0].numpy(), expected, atol=5e-3)  # float32 interpolation weights
    small, scale = caffe_input(torch.from_numpy(rgb[:, :60, :80]), 600, 1000)
    assert scale == 10.0 and small.shape == (1, 3, 600, 800)
