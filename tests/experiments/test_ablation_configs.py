"""The ablation group: base is the paper's model, each other option changes one thing of it."""

import pytest
from conftest import compose_config

BASE = {"nonlinearity": "gated_tanh", "attention": "concat", "use_image": True, "weight_norm": True}


@pytest.mark.parametrize("ablation,change", [
    ("base", {}),
    ("relu", {"nonlinearity": "relu"}),
    ("product", {"attention": "product"}),
    ("blind", {"use_image": False}),
])
def test_each_ablation_is_base_plus_one_change(ablation, change, tmp_path):
    cfg = compose_config(["experiment=ablations", f"ablation={ablation}"], str(tmp_path))
    assert {k: cfg.model[k] for k in BASE} == BASE | change
    assert cfg.data.builder.num_train_images == 3000 and cfg.trainer.max_epochs == 32 and cfg.trainer.max_time is None
    assert cfg.paths.data_dir.endswith("data/ablations")  # not the default shapes' folder


def test_model_attention_is_settable_as_written(tmp_path):
    assert compose_config(["model.attention=product"], str(tmp_path)).model.attention == "product"
