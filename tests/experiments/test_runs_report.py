"""`python -m updown_vqa.report` on hand-made run folders with known means, deviations and p-values."""

import csv
import json
import math
import os

import pytest

from updown_vqa.report import main as report_main

HEADER = ["epoch", "step", "train/loss", "val/acc", "val/acc_number", "val/loss"]


def make_run(folder, overrides: list[str], best: float, status: str = "finished", wall: float = 60.0):
    """A run folder as train writes it: 3 epochs, the best val/acc at epoch 1 with val/acc_number = best / 2."""
    os.makedirs(folder / ".hydra")
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / ".hydra" / "config.yaml").write_text("checkpoint:\n  monitor: val/acc\n  mode: max\n")
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for epoch, acc in enumerate([best - 5, best, best - 1]):
            writer.writerow([epoch, 10 * epoch + 9, 1.0, "", "", ""])
            writer.writerow([epoch, 10 * epoch + 9, "", acc, acc / 2, 3.0 - epoch])
    if status == "finished":
        os.makedirs(folder / "checkpoints")
        (folder / "checkpoints" / "finished.json").write_text(
            json.dumps({"monitor": "val/acc", "best": best, "wall_seconds": wall}))
    elif status == "failed":
        (folder / "failed.json").write_text(json.dumps({"error": "features file not found"}))


@pytest.fixture
def grid(tmp_path):
    """base 50/52/54 (mean 52, std 2); relu base + 1, 2, 3 (paired t = 2 sqrt(3), df 2); product seed 0 failed;
    blind seed 2 unfinished; one base run with an extra override, in a second folder."""
    sweep = tmp_path / "multirun" / "ablations"
    bests = {"base": [50, 52, 54], "relu": [51, 54, 57], "product": [0, 50, 53], "blind": [40, 41, 0]}
    for ablation, values in bests.items():
        for seed, best in enumerate(values):
            status = {("product", 0): "failed", ("blind", 2): "unfinished"}.get((ablation, seed), "finished")
            make_run(sweep / f"ablation={ablation},seed={seed}", ["experiment=ablations", f"ablation={ablation}",
                     f"seed={seed}", "paths.data_dir=/somewhere"], best, status, wall=60.0 + seed)
    make_run(tmp_path / "runs" / "longer", ["experiment=ablations", "ablation=base", "seed=0",
                                            "trainer.max_epochs=30"], 70)
    return tmp_path


def read_rows(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["group"]: row for row in csv.DictReader(f)}


def test_report_groups_runs_and_compares_with_the_baseline(grid, capsys):
    out = grid / "report"
    report_main([str(grid / "multirun" / "ablations"), str(grid / "runs"), "--out", str(out),
                 "--baseline", "ablation=base"])
    assert sorted(os.listdir(out)) == ["curves.png", "report.csv", "report.md"]
    rows = read_rows(out / "report.csv")
    assert sorted(rows) == ["ablation=base,trainer.max_epochs=-", "ablation=base,trainer.max_epochs=30",
                            "ablation=blind,trainer.max_epochs=-", "ablation=product,trainer.max_epochs=-",
                            "ablation=relu,trainer.max_epochs=-"]
    base, relu = rows["ablation=base,trainer.max_epochs=-"], rows["ablation=relu,trainer.max_epochs=-"]
    assert (int(base["n"]), float(base["best_mean"]), float(base["best_std"])) == (3, 52.0, 2.0)
    assert float(base["val/acc_number_mean"]) == 26.0  # taken at each run's best epoch, not the last
    assert float(base["val/loss_mean"]) == 2.0
    assert float(base["epochs_mean"]) == 3 and float(base["wall_seconds_mean"]) == 61.0
    t = 2 * math.sqrt(3)
    assert float(relu["diff_mean"]) == pytest.approx(2.0) and int(relu["pairs"]) == 3
    assert float(relu["p"]) == pytest.approx(1 - t / math.sqrt(2 + t * t))  # 0.0742
    product = rows["ablation=product,trainer.max_epochs=-"]
    assert int(product["n"]) == 2 and float(product["best_mean"]) == 51.5  # the failed seed is not averaged
    assert float(product["diff_mean"]) == pytest.approx(-1.5) and product["p"] == "nan"  # 2 pairs: no p
    assert int(rows["ablation=blind,trainer.max_epochs=-"]["n"]) == 2
    text = (out / "report.md").read_text()
    assert "failed (features file not found)" in text and "ablation=product,seed=0" in text
    assert "ablation=blind,seed=2: unfinished" in text
    assert "| ablation=relu,trainer.max_epochs=- | 3 | 54.00 ± 3.00 | 27.00 ± 1.50 |" in text
    assert "0.074" in text and "ablation=base,trainer.max_epochs=30 | 1 | 70.00 |" in text
    assert capsys.readouterr().out.startswith("| group | n | best val/acc | val/acc_number |")


def test_one_folder_of_identical_settings_is_one_group(tmp_path):
    for seed, best in enumerate([60, 62]):
        make_run(tmp_path / str(seed), [f"seed={seed}", "model.hidden_dim=64"], best)
    report_main([str(tmp_path)])
    rows = read_rows(tmp_path / "report.csv")
    assert list(rows) == ["all"] and float(rows["all"]["best_mean"]) == 61.0
    report_main([str(tmp_path), "--baseline", "model.hidden_dim=64"])  # a grid's first group, alone so far
    assert list(read_rows(tmp_path / "report.csv")) == ["model.hidden_dim=64"]


def test_unknown_baseline_and_empty_folder_are_one_line_errors(grid, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(grid / "multirun"), "--baseline", "ablation=nothing"])
    assert exit_info.value.code == 1
    assert "--baseline ablation=nothing: no groups match; name one of: ablation=base" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "runs" / "longer" / ".hydra")])
    assert "no run folder" in capsys.readouterr().err
