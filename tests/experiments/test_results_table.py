"""`python -m updown_vqa.report --results`: today's numbers as one table, from what run folders recorded."""

import json

import pytest
from test_runs_report import make_run

from updown_vqa.report import main as report_main


def finish(folder, **fields):
    """Add what `train` now records in finished.json (command, machine, date, ...) to a hand-made run."""
    path = folder / "checkpoints" / "finished.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


@pytest.fixture
def runs(tmp_path):
    common = {"machine": "AMD EPYC 7B13, 2 cores, no GPU", "load_average": 0.4, "epochs": 3,
              "stopped_by": "max_epochs", "max_time_reached": False}
    make_run(tmp_path / "caption", ["task=caption"], 3.5, wall=725.0)
    finish(tmp_path / "caption", task="caption", command="python -m updown_vqa.train task=caption",
           date="2026-12-07 05:00 UTC", **common)
    make_run(tmp_path / "vqa", ["seed=0"], 95.25, wall=812.4)
    finish(tmp_path / "vqa", task="vqa", command="python -m updown_vqa.train seed=0", date="2026-12-07 04:00 UTC",
           **common)
    make_run(tmp_path / "clock", ["trainer.max_time=00:00:00:05"], 41.0, wall=5.2)
    finish(tmp_path / "clock", task="vqa", command="python -m updown_vqa.train trainer.max_time=00:00:00:05",
           date="2026-12-07 04:30 UTC", **common | {"stopped_by": "max_time", "max_time_reached": True, "epochs": 1})
    make_run(tmp_path / "killed", ["seed=1"], 60.0, status="unfinished")
    return tmp_path


def test_results_are_one_table_by_task_with_command_wall_time_machine_and_date(runs, capsys):
    out = runs / "results.md"
    report_main(["--results", str(runs), "--out", str(out)])
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| vqa", "| vqa", "| caption"]  # vqa first, then by date
    vqa = rows[0]
    assert "`python -m updown_vqa.train seed=0`" in vqa and "val/acc **95.25**" in vqa
    assert "acc_number 47.62" in vqa  # the other metrics at the best epoch, not the last
    assert "13 min 32 s" in vqa and "AMD EPYC 7B13, 2 cores, no GPU; load 0.4" in vqa and "2026-12-07 04:00 UTC" in vqa
    assert "| 1 (max_time) |" in rows[1]  # a run the clock stopped is marked as such
    assert "12 min 05 s" in rows[2]
    assert "killed (unfinished)" in printed  # listed, not tabulated


def test_results_of_folders_without_a_finished_run_is_one_error_line(tmp_path, capsys):
    make_run(tmp_path / "killed", ["seed=1"], 60.0, status="unfinished")
    with pytest.raises(SystemExit) as exit_info:
        report_main(["--results", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no finished run" in err[0]


def test_a_run_that_validates_several_times_an_epoch_reports_its_best_validation_not_an_epochs_last(
        tmp_path, capsys):
    """SCST validates every 64 steps: its best (and best checkpoint) can fall mid-epoch; the row must give
    the metrics of that validation, not of its epoch's last one."""
    run = tmp_path / "scst"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- task=caption\n- stage=scst\n")
    (run / ".hydra" / "config.yaml").write_text("checkpoint:\n  monitor: val/cider\n  mode: max\n")
    (run / "metrics.csv").write_text("epoch,step,val/cider,val/bleu4\n"
                                     "0,63,3.96,0.698\n0,127,3.95,0.687\n"
                                     "1,191,4.34,0.733\n1,255,4.04,0.702\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "finished.json").write_text(json.dumps(
        {"monitor": "val/cider", "best": 4.34, "wall_seconds": 60.0, "task": "caption scst", "epochs": 2}))
    report_main(["--results", str(tmp_path)])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| caption scst")][0]
    assert "val/cider **4.340** (bleu4 0.733)" in row, row
