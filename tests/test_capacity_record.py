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
