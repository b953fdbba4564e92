"""Resume checks everything that decides the result: the model's settings (a changed hidden_dim names the
key and both values) and the feature stores' content (values replaced with the same shapes and ids)."""

import shutil

import h5py
import pytest
from conftest import run_module, tiny_overrides


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A finished one-epoch run on a private copy of the tiny dataset: (overrides, last.ckpt, data folder)."""
    root = tmp_path_factory.mktemp("resume_checks")
    shutil.copytree(data_dir, root / "data")
    overrides = tiny_overrides(str(root / "data"), str(root / "logs")) + ["name=r"]
    result = run_module("updown_vqa.train", *overrides, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return overrides, root / "logs" / "runs" / "r" / "checkpoints" / "last.ckpt", root / "data"


def one_error(result) -> str:
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "error: " in line]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in output, output[-3000:]
    return errors[0]


@pytest.mark.slow
def test_resuming_with_another_hidden_dim_names_the_key_and_both_values(trained, tmp_path):
    overrides, last, _ = trained
    result = run_module("updown_vqa.train", *overrides, f"resume={last}", "trainer.max_epochs=2",
                        "model.hidden_dim=48", cwd=tmp_path)
    assert "trained with model.hidden_dim=32, this run has model.hidden_dim=48" in one_error(result)


@pytest.mark.slow
def test_resuming_onto_a_store_whose_values_changed_is_refused(trained, tmp_path):
    overrides, last, data = trained
    store = data / "shapes" / "shapes_train_features.h5"
    with h5py.File(store, "r+") as f:  # same shapes, same ids, other values
        f["features"][0] = f["features"][0] * 2 + 1
    result = run_module("updown_vqa.train", *overrides, f"resume={last}", "trainer.max_epochs=2", cwd=tmp_path)
    line = one_error(result)
    assert f"the feature store {store} (data.train.features[0]) changed since this checkpoint" in line
