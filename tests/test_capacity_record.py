"""docs/capacity.md's pilot numbers are the tool's: re-derived here from the committed pilot sweeps."""

import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = ROOT / "docs" / "capacity"
DOC = (ROOT / "docs" / "capacity.md").read_text()
PILOTS = [str(CAPACITY / "pilot-c8"), str(CAPACITY / "pilot-c8-warmup")]


def test_the_pilot_block_is_what_the_script_prints(capsys):
    runpy.run_path(str(CAPACITY / "pilot.py"), run_name="pilot")["main"](*PILOTS)
    printed = capsys.readouterr().out.strip()
    assert printed.splitlines()[0] == "pilot-c8:"
    assert f"```text\n{printed}\n```" in DOC


def test_candidate_a_failed_on_a_collapsed_run():
    metrics = [json.loads(line) for line in
               (CAPACITY / "pilot-c8" / "runs" / "cfashionmnist_t8" / "seed100" / "metrics.jsonl").read_text().splitlines()]
    first_phase = metrics[:20]  # 800 steps at lr 0.1, 40 steps an epoch
    assert max(m["train_accuracy"] for m in first_phase) < 0.2
    assert metrics[19]["collapsed"] is True and all("collapsed" not in m for m in metrics[:19])
    assert "**A fails.**" in DOC


def test_the_results_script_prints_mean_and_std_of_done_runs_only(tmp_path):
    """docs/capacity/results.py on a known table: means ± std (ddof=1) of the done runs, pending ones counted."""
    header = ("dataset,seed,status,channels,initial_nodes,test_accuracy,train_eval_accuracy,tau_star,"
              "nodes_at_tau_star,parameters_at_tau_star,sparsity,mean_degree")
    rows = ["cmnist,0,done,8,30,0.90,0.95,0.01,20,60000,0.5,8.0",
            "cmnist,1,done,8,30,0.92,0.97,0.01,22,62000,0.7,9.0",
            "cfashionmnist,0,done,8,30,0.80,0.82,0.01,30,70000,0.6,10.0",
            "cfashionmnist,1,pending,,,,,,,,,"]
    table = tmp_path / "runs_c8.csv"
    table.write_text("\n".join([header, *rows]) + "\n")
    printed = runpy.run_path(str(CAPACITY / "results.py"), run_name="results")["results_table"](table)
    lines = printed.splitlines()
    assert lines[0] == "runs_c8.csv: C = 8, 3 of 4 runs done (not a result until all are)"
    assert "| | CMNIST (n = 2) | CFashionMNIST (n = 1) |" in lines
    assert "| τ\\* (one for all datasets) | 0.01 | 0.01 |" in lines
    assert "| test accuracy | 0.910 ± 0.014 | 0.800 ± – |" in lines
    assert "| training accuracy, no augmentation | 0.960 ± 0.014 | 0.820 ± – |" in lines
    assert "| nodes at τ\\* (of 30) | 21.0 ± 1.4 | 30.0 ± – |" in lines
    assert "| parameters at τ\\* | 61.0k ± 1.4k | 70.0k ± – |" in lines
    assert "| sparsity at τ = 0.006 | 0.600 ± 0.141 | 0.600 ± – |" in lines
    assert "| sparsity at τ\\* | – | – |" in lines  # a column the table lacks
