"""The C4 detector's training pass: every parameter learns, losses fall on a fixed batch, and the
evaluation pass returns detections in torchmetrics' format."""

import pytest
import torch

from updown_vqa.detection import c4_training
from updown_vqa.detection.c4 import C4Detector

SMALL = {"depth": 18, "width": 4, "pool_size": 7, "norm": "batch", "num_classes": 3,
         "num_attributes": 4, "anchor_scales": (1, 2), "anchor_ratios": (1.0,), "min_box": 2,
         "rpn_hidden": 8, "post_nms": 20}


def batch():
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 28.0], [36.0, 30.0, 60.0, 62.0]]),
                "labels": torch.tensor([1, 2]), "attributes": torch.tensor([[0, 2], [1, -1]])}] * 2
    return images, targets


@pytest.mark.slow
def test_every_parameter_gets_a_gradient_and_the_losses_fall():
    torch.manual_seed(0)
    model = C4Detector(**SMALL).train()
    images, targets = batch()
    losses = c4_training.training_losses(model, images, targets, rpn_batch=32, box_batch=8)
    assert set(losses) == {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box",
                           "loss_attributes"}
    sum(losses.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    first = float(sum(losses.values()))
    for _ in range(8):
        optimizer.zero_grad()
        loss = sum(c4_training.training_losses(model, images, targets, 32, 8).values())
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.8 * first


def test_attribute_loss_counts_no_attribute_as_class_0():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    low = c4_training.attribute_loss(logits, torch.tensor([[-1, -1], [1, -1]]))
    high = c4_training.attribute_loss(logits, torch.tensor([[0, -1], [0, -1]]))
    assert float(low) < 0.02 < float(high)


def test_predict_gives_per_class_detections():
    torch.manual_seed(0)
    model = C4Detector(**SMALL).eval()
    detections, res4 = c4_training.predict(model, batch()[0], score_threshold=0.0)
    assert res4.shape == (2, 16, 4, 4)
    for d in detections:
        assert d["boxes"].shape == (len(d["scores"]), 4) and set(d["labels"].tolist()) <= {1, 2}
        assert (d["boxes"][:, 2:] <= 63).all() and len(d["scores"]) > 0


def test_a_train_detector_checkpoint_rebuilds_the_same_c4_detector(tmp_path):
    from updown_vqa.core.errors import UpdownError
    from updown_vqa.detection.c4_regions import build_c4
    from updown_vqa.detection.module import BottomUpDetector

    spec = {"arch": "c4", "depth": 18, "width": 4, "pool_size": 7, "anchor_scales": [1, 2],
            "anchor_ratios": [1.0], "min_box": 2, "rpn_hidden": 8, "norm": "batch"}
    module = BottomUpDetector(["a", "b"], ["red", "big", "small"], spec, proposals=20).eval()
    assert module.hparams.detector["num_attributes"] == 4
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
               tmp_path / "best.ckpt")
    rebuilt = build_c4(weights=str(tmp_path / "best.ckpt"), proposals=20)
    image = (torch.rand(3, 64, 64) * 255).to(torch.uint8)
    ours = rebuilt.detect([image], 64, 64)[0]
    theirs = module.detector.detect([image], 64, 64)[0]
    assert torch.allclose(ours["class_probs"], theirs["class_probs"], atol=1e-6)
    fpn = {"hyper_parameters": {"detector": {"backbone": "resnet18"}}, "state_dict": {}}
    torch.save(fpn, tmp_path / "fpn.ckpt")
    with pytest.raises(UpdownError, match="fpn.ckpt: a train_detector checkpoint of arch 'fpn'"):
        build_c4(weights=str(tmp_path / "fpn.ckpt"))
