"""docs/repro.md's numbers are the tool's: re-derived here from the committed study (docs/repro/)."""

import runpy
from pathlib import Path

import pytest

from dagwire import stats
from dagwire.tables import read_runs_table

ROOT = Path(__file__).resolve().parents[1]
REPRO = ROOT / "docs" / "repro"
DOC = (ROOT / "docs" / "repro.md").read_text()


def signed(value: float) -> str:
    """+0.204 / −0.080, as the doc's table writes τ-b."""
    return f"{value:+.3f}".replace("-", "−")


@pytest.fixture(scope="module")
def runs():
    return read_runs_table(REPRO)


def test_the_study_is_complete(runs):
    done = runs[runs["status"].astype(str) == "done"]
    assert len(done) == 15
    assert done.groupby("dataset")["seed"].nunique().to_dict() == {"cmnist": 5, "cfashionmnist": 5,
                                                                     "cfashionmnist_t8": 5}
    assert set(done["tau_star"].astype(float)) == {0.02}


def test_every_verdict_in_the_doc_is_the_ordering_test(runs):
    at_tau_star = stats.ordering_test(runs, stats.TAU_STAR_SUFFIX)
    at_threshold = stats.ordering_test(runs)
    assert [t.verdict for t in at_tau_star.tests + at_threshold.tests] == ["not reproduced"] * 16
    for star, plain in zip(at_tau_star.tests, at_threshold.tests):
        row = (f"| {signed(star.tau_b)} | {star.p:.3f} | {star.p_holm:.3f} "
               f"| {signed(plain.tau_b)} | {plain.p:.3f} | {plain.p_holm:.3f} |")
        assert row in DOC, (star.feature, row)


def test_the_evidence_block_is_what_the_script_prints(capsys):
    runpy.run_path(str(REPRO / "evidence.py"), run_name="evidence").get("main")(str(REPRO / "sweep"))
    printed = capsys.readouterr().out.strip()
    assert printed.splitlines()[0].split() == ["dataset", "cmnist", "cfashionmnist", "cfashionmnist_t8"]
    assert f"```text\n{printed}\n```" in DOC
