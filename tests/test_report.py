"""The sweep report: tables against hand-computed mean ± std, the two files, the CLI, and a real browser.

The browser test needs Debian's chromium (`apt-get update && apt-get install -y chromium`) and
skips without /usr/bin/chromium.
"""

from __future__ import annotations

import csv
import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dagwire import report, report_sections
from dagwire.cli import main
from dagwire.compare import load_runs
from dagwire.paper import PAPER_LABEL
from dagwire.render import Table
from test_compare import make_fake_sweep  # the fake sweep builder lives beside the compare tests

CHROMIUM = Path("/usr/bin/chromium")


def _cell(table: Table, row_label: str, column: str) -> str:
    row = next(r for r in table.rows if r[0] == row_label)
    return row[table.header.index(column)]


def _write_runs(path: Path, rows: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _hand_rows() -> list[dict]:
    base = {"status": "done", "error": "", "run_dir": "", "disconnected": False, "test_accuracy": 0.9,
            "thresholded_accuracy": 0.9}
    rows = []
    for seed, (nodes, sparsity, paths, a, seconds, params) in enumerate(
            [(10, 0.90, 1.0, 40.0, 100.0, 150e3), (12, 0.95, 2.0, 50.0, 110.0, 160e3), (14, 1.00, 4.0, 60.0, 120.0, 170e3)]):
        rows.append({**base, "dataset": "cmnist", "seed": seed, "nodes": nodes, "sparsity": sparsity,
                     "log_paths": paths, "dyn_A": a, "mean_epoch_seconds": seconds, "parameters": params})
    rows.append({**base, "dataset": "cfashionmnist_t8", "seed": 0, "nodes": 20, "sparsity": 0.5, "log_paths": 7.0,
                 "dyn_A": 10.0, "mean_epoch_seconds": 90.0, "parameters": 300e3})
    # neither the disconnected nor the failed run may enter the feature tables
    rows.append({**base, "dataset": "cmnist", "seed": 3, "disconnected": True, "sparsity": 0.99,
                 "mean_epoch_seconds": 130.0})
    rows.append({**base, "dataset": "cmnist", "seed": 4, "status": "failed", "error": "boom"})
    return rows


def test_tables_match_hand_computed_mean_and_std(tmp_path):
    df = load_runs(_write_runs(tmp_path, _hand_rows()))
    stats = report_sections.stats_by_dataset(df[df["connected"]], ["nodes", "log_paths"])
    assert stats.loc["cmnist", ("nodes", "mean")] == 12.0 and stats.loc["cmnist", ("nodes", "std")] == 2.0
    assert stats.loc["cmnist", ("nodes", "count")] == 3
    assert stats.loc["cmnist", ("log_paths", "std")] == pytest.approx(np.std([1, 2, 4], ddof=1))

    t1 = report_sections.table1(df)
    assert "cmnist ours (n=3)" in t1.header and "cmnist paper" in t1.header
    assert "cfashionmnist_t8 ours (n=1)" in t1.header and "cfashionmnist_t8 paper" not in t1.header
    assert _cell(t1, "nodes (all)", "cmnist ours (n=3)") == "12.0 ± 2.0"
    assert _cell(t1, "nodes (all)", "cmnist paper") == "12.5 ± 2.3"
    assert _cell(t1, "sparsity (all)", "cmnist ours (n=3)") == "0.950 ± 0.050"
    assert _cell(t1, "parameters", "cmnist ours (n=3)") == "160k ± 10k"
    assert _cell(t1, "parameters", "cmnist paper") == "166k ± 30k"
    assert _cell(t1, "nodes (all)", "cfashionmnist_t8 ours (n=1)") == "20.0 ± –"  # one run: no std

    t2 = report_sections.table2(df)
    assert _cell(t2, "log_paths", "cmnist ours (n=3)") == f"{7 / 3:.2f} ± {np.std([1, 2, 4], ddof=1):.2f}"
    assert _cell(t2, "mean_path", "cmnist ours (n=3)") == "–"  # not in this runs.csv
    assert _cell(t2, "log_paths", "cmnist paper") == "4.03 ± 1.03"

    t4 = report_sections.table4(df)
    assert _cell(t4, "(A) % retained ever below τ", "cmnist ours (n=3)") == "50.00 ± 10.00"
    assert _cell(t4, "(A) % retained ever below τ", "cmnist paper") == "50.00 ± 6.50"

    # Table 3 counts every done run, the disconnected one too: 100, 110, 120, 130 s
    t3 = report_sections.table3(df)
    assert "cmnist ours (n=4)" in t3.header
    assert _cell(t3, "full DAG", "cmnist ours (n=4)") == f"115.00 ± {np.std([100, 110, 120, 130], ddof=1):.2f}"
    assert _cell(t3, "rerun", "cmnist ours (n=4)") == "–"  # no retrain directories
    assert _cell(t3, "full DAG", "cmnist paper") == "151.99 ± 17.73"

    t5 = report_sections.table5(df)
    assert t5.rows[0][:3] == ["cmnist", "full DAG", "ours (n=4)"] and t5.rows[0][3] == "90.000 ± 0.000"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    sweep = make_fake_sweep(root / "full")
    local = make_fake_sweep(root / "local", datasets={"cifar10": 2}, failed=0, disconnected=False)
    with open(local / "sweep.yaml", "a") as f:  # the window Table 5 names
        f.write("config: {graph: local, local_window: 10}\n")
    return sweep, local


@pytest.fixture(scope="module")
def paths(written):
    sweep, local = written
    return report.write_report(sweep, local)


def test_cli_writes_html_and_md(written, paths, capsys):
    sweep, local = written
    html_path, md_path = paths
    assert html_path == sweep / "report.html" and md_path == sweep / "report.md"
    # the CLI on a copy (same content) prints the two paths
    copy = sweep.parent / "copy"
    shutil.copytree(sweep, copy)
    capsys.readouterr()
    assert main(["report", str(copy), "--local", str(local)]) == 0
    assert capsys.readouterr().out.split() == [str(copy / "report.html"), str(copy / "report.md")]


def test_html_is_self_contained(written, paths):
    sweep, _ = written
    text = paths[0].read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Fig. 2", "Fig. 4", "Fig. 8", "Fig. 9",
                  "Fig. 6a", "Fig. 6b", "Fig. 7", "Failed runs", "Feature trajectories", "When the ordering appears"):
        assert title in text, title
    assert "Not drawn" not in text
    assert html.escape(PAPER_LABEL) in text
    assert "<script" not in text.lower() and "http://" not in text and "https://" not in text
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert len(sources) == len(list((sweep / report_sections.FILES_DIR).glob("*.png")))
    assert "RuntimeError: CUDA out of memory | tried to allocate 2 GiB" in text  # failed run with its error
    assert "9 done (1 disconnected at the threshold), 1 failed" in text
    # the local sweep's cifar10 rows stand beside the paper's Table 5 subgraph row
    assert "92.901 ± 0.193" in text and "local (|i − j| ≤ 10)" in text
    assert not list(sweep.glob(".*.tmp")) and not list((sweep / report_sections.FILES_DIR).glob(".*.tmp"))


def test_markdown_has_tables_and_image_files(written, paths):
    sweep, _ = written
    text = paths[1].read_text()
    assert "| quantity | cmnist ours (n=3) | cmnist paper |" in text
    assert "*0.988 ± 0.003*" in text  # the paper's cmnist sparsity, in italics
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 9
    for link in links:
        assert link.startswith(report_sections.FILES_DIR + "/") and (sweep / link).read_bytes()[:4] == b"\x89PNG"
    # a "|" inside an error message is escaped so the row keeps its columns
    assert "CUDA out of memory \\| tried" in text


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2  # no runs.csv
    _write_runs(tmp_path / "failed", [{"dataset": "cmnist", "seed": 0, "status": "failed", "error": "x", "run_dir": ""}])
    assert main(["report", str(tmp_path / "failed")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("dagwire: error: ") for line in err)
    assert "no finished runs" in err[2]
    assert not (tmp_path / "failed" / "report.html").exists()


def test_a_sweep_still_running_reports_unfinished_runs_apart_from_failed_ones(tmp_path):
    from dagwire.compare import load_runs

    rows = _hand_rows()
    rows += [{"dataset": "cmnist", "seed": 7, "status": "pending", "error": "", "run_dir": ""},
             {"dataset": "cmnist", "seed": 8, "status": "failed", "error": "boom", "run_dir": ""}]
    df = load_runs(_write_runs(tmp_path, rows))
    done = int(df["done"].sum())
    line, _ = report._summary(df, tmp_path, None, None)
    assert f"{done} done" in line and "2 failed, 1 not finished;" in line  # _hand_rows has a failed run too
    failed = report._failed_table(df)
    assert [row[1] for row in failed.rows] == ["4", "8"]  # the pending run is not listed as failed


def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess:
    """Headless Chromium in a child process, a fresh profile, nothing fetched from the network."""
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={user_dir}", *args],
        capture_output=True, text=True, timeout=120)


# After the load event: how many <img>s decoded, and every element wider than its box or than the
# 1,280-px window (a table cut off, a line that does not wrap). The report has no script of its own;
# a broken image is added on purpose to show the probe tells them apart.
PROBE = ('<img id=broken src="data:image/png;base64,AAAA"><script>window.addEventListener("load", () => {'
         'const all = [...document.images]; const ok = all.filter(i => i.complete && i.naturalWidth > 0);'
         'const page = document.documentElement.clientWidth;'
         'const wide = [...document.body.querySelectorAll("*")].filter(el => (el.clientWidth > 0 && '
         'el.scrollWidth > el.clientWidth + 1) || el.getBoundingClientRect().right > page + 1)'
         '.map(el => el.tagName + " " + (el.textContent || "").slice(0, 60).replace(/[<>&]/g, ""));'
         'const scroll = document.documentElement.scrollWidth;'
         'document.body.insertAdjacentHTML("beforeend", `<p id=probe>IMGCHECK total=${all.length} '
         'loaded=${ok.length} page=${page} scroll=${scroll} wide=${wide.length} [${wide.slice(0, 5).join(" | ")}]</p>`);'
         '});</script></body>')


def _probe(html_path: Path, tmp_path: Path) -> tuple[str, str]:
    """(the page's DOM after the probe ran in a 1,280-px window, the probe's line)."""
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", PROBE))
    done = _chromium("--window-size=1280,2400", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(),
                     user_dir=tmp_path / "probe-profile")
    lines = [m for m in re.findall(r'id="?probe"?>(IMGCHECK [^<]*)<', done.stdout) if "${" not in m]  # not the script
    assert lines, done.stderr[-2000:]
    return done.stdout, html.unescape(lines[-1])


def _fits_and_loads(html_path: Path, tmp_path: Path) -> str:
    """Assert that every image of the page loads and no element is wider than the 1,280-px window; the DOM."""
    dom, line = _probe(html_path, tmp_path)
    images = html_path.read_text().count("<img ")
    assert f"IMGCHECK total={images + 1} loaded={images} page=1280 scroll=1280 wide=0 " in line, line
    return dom


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_report_renders_in_headless_chromium(paths, tmp_path):
    import matplotlib.image

    html_path = paths[0]
    # 1. The page itself, as a user opens it: a screenshot that is not blank.
    shot = tmp_path / "report.png"
    done = _chromium("--window-size=1280,2400", f"--screenshot={shot}", html_path.as_uri(), user_dir=tmp_path / "u1")
    assert shot.exists(), done.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.005  # text, tables and figures, not a white page

    # 2. Every image loads and every table fits the window, the failed runs' long errors included.
    dom = _fits_and_loads(html_path, tmp_path)
    assert "Table 1: structural characteristics of the pruned networks" in dom
    assert "<th>cmnist ours (n=3)</th>" in dom and "Table 5: test accuracy" in dom


def test_the_probe_sees_an_element_wider_than_the_window(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    page = tmp_path / "wide.html"
    page.write_text(f"<!DOCTYPE html><html><head><style>{report.CSS}</style></head><body>"
                    f"{report.html_table(Table('wide', ['x'] * 40, [['0.123 ± 0.456'] * 40]))}</body></html>")
    _, line = _probe(page, tmp_path)
    assert "wide=0 " not in line and "DIV" in line  # the table's box scrolls: a column would be cut off


@pytest.fixture(scope="module")
def capacity_report(tmp_path_factory):
    """The committed capacity study's report (C = 8, with C = 4 as --capacity), written from copies of its sweeps."""
    root = tmp_path_factory.mktemp("capacity")
    study = Path(__file__).resolve().parents[1] / "docs" / "capacity"
    for name in ("sweep-c8", "sweep-c4"):
        shutil.copytree(study / name, root / name, ignore=shutil.ignore_patterns("weights.pt", "checkpoint.pt"))
    return report.write_report(root / "sweep-c8", capacity_dir=root / "sweep-c4")


def test_the_report_of_a_real_study_opens_with_its_answer(capacity_report):
    text = capacity_report[0].read_text()
    answer = text.index("<h2>The answer</h2>")
    # One sentence per test: both capacities at τ*, this sweep at its τ, and the pooled test.
    assert ("<li>Features at τ* = 0.004, 15 runs: 0 of 8 features follow the paper&#x27;s ordering after Holm&#x27;s "
            "correction.</li>") in text
    assert ("<li>C = 4, features at τ* = 0.006, 15 runs: 2 of 8 features follow the paper&#x27;s ordering after "
            "Holm&#x27;s correction (parameters, edge_connectivity).</li>") in text
    assert "<li>Pooled test, C = 4 → 8: the difficulty effect grows for 0 of 8 features" in text
    claim = text.index('alt="The claim: each feature against difficulty"')
    first_table = text.index("<table>")
    details = text.index("<details><summary>sweep.yaml</summary>")  # folded away: no `open`
    assert answer < claim < first_table < details and "<details open" not in text
    assert details > text.rindex("<table>") and details > text.rindex("<img ")
    md = capacity_report[1].read_text()
    assert md.index("## The answer") < md.index("](report_files/fig_claim.png)") < md.index("<details>")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_report_of_a_real_study_fits_a_1280_px_window(capacity_report, tmp_path):
    dom = _fits_and_loads(capacity_report[0], tmp_path)
    assert "Does the difficulty effect grow with capacity? (C = 4 → 8)" in dom


def test_ordering_table_ranks_by_accuracy_and_checks_each_direction(tmp_path):
    base = {"status": "done", "error": "", "run_dir": "", "disconnected": False}
    rows = []
    # easy: accurate, sparse, few paths; medium and hard get denser, but edge connectivity dips for medium.
    for dataset, acc, sparsity, paths, conn in (("easy", 0.95, 0.9, 2.0, 3), ("hard", 0.70, 0.5, 6.0, 5),
                                                ("medium", 0.85, 0.7, 4.0, 2)):
        for seed, jitter in enumerate((-0.01, 0.01)):
            rows.append({**base, "dataset": dataset, "seed": seed, "test_accuracy": acc + jitter,
                         "sparsity": sparsity + jitter, "log_paths": paths, "edge_connectivity": conn})
    table = report_sections.ordering_table(load_runs(_write_runs(tmp_path, rows)))
    assert table.header[2:5] == ["easy (acc 95.0 %)", "medium (acc 85.0 %)", "hard (acc 70.0 %)"]
    verdict = {row[0]: row[-1] for row in table.rows}
    # Six runs in three ordered pairs: 90 distinct labellings, so a perfect order has p ≈ 1/90 and
    # survives Holm's ×3; edge connectivity (3, 2, 5) does not follow the order.
    assert verdict == {"sparsity": "reproduced", "log_paths": "reproduced", "edge_connectivity": "not reproduced"}
    assert _cell(table, "sparsity", "easy (acc 95.0 %)") == f"0.900 ± {np.std([-0.01, 0.01], ddof=1):.3f}"
    assert _cell(table, "sparsity", "Kendall τ-b") == "-0.894"  # 15 pairs, 3 tied in rank, 12 discordant: −12/√(12·15)
    assert "2 of 3 features are reproduced" in table.note
    assert not any("−" in h for h in table.header)  # the pairwise differences have their own table

    from dagwire.stats import ordering_test

    result = ordering_test(load_runs(_write_runs(tmp_path, rows)), label="τ = 0.006")
    pairs = report_sections.pairs_table(result)
    assert pairs.header[0] == "feature" and len(pairs.header) == 2
    assert [row[0] for row in pairs.rows] == ["sparsity"] * 2 + ["log_paths"] * 2 + ["edge_connectivity"] * 2
    assert pairs.rows[0][1].startswith("medium − easy: -0.2 [")  # 0.7 − 0.9
    assert report_sections.answer_lines([("", result)]) == [
        "Features at τ = 0.006, 6 runs: 2 of 3 features follow the paper's ordering after Holm's correction "
        "(sparsity, log_paths)."]
    # One dataset: nothing to order.
    assert report_sections.ordering_table(load_runs(_write_runs(tmp_path / "one", rows[:2]))) is None


def test_local_label_names_the_window_of_the_local_sweep(tmp_path):
    (tmp_path / "sweep.yaml").write_text("config:\n  graph: local\n  local_window: 2\n")
    assert report_sections.local_label(tmp_path) == "local (|i − j| ≤ 2)"
    assert report_sections.local_label(tmp_path / "missing") == "local initial graph"


def _capacity_rows(channels: int, trend: float, collapsed_seed: int | None = None) -> list[dict]:
    """Three datasets at one C; each feature moves by `trend` per step of difficulty (the paper's way)."""
    rows = []
    for rank, (dataset, acc) in enumerate((("easy", 0.95), ("medium", 0.85), ("hard", 0.70))):
        for seed, jitter in enumerate((-0.02, -0.01, 0.0, 0.01, 0.02)):
            rows.append({"dataset": dataset, "seed": seed, "status": "done", "error": "", "run_dir": "",
                         "disconnected": False, "channels": channels, "test_accuracy": acc + jitter / 10,
                         "train_eval_accuracy": acc + 0.01, "collapsed": seed == collapsed_seed and dataset == "hard",
                         "nodes": 20 + trend * rank + 3 * jitter * (1 + rank), "mean_degree": 6 + trend * rank + jitter,
                         "sparsity": 0.8 - trend * rank / 10 + jitter / 10, "parameters": 40e3 + 1e3 * trend * rank,
                         "log_paths": 10 + trend * rank + jitter})
    return rows


def test_collapsed_runs_are_listed_and_left_out_of_the_ordering(tmp_path):
    df = load_runs(_write_runs(tmp_path, _capacity_rows(8, 2.0, collapsed_seed=3)))
    listed = report._collapsed_table(df)
    assert [row[:2] for row in listed.rows] == [["hard", "3"]]
    table = report_sections.ordering_table(df)
    assert "Left out: 1 run(s) that collapsed" in table.note and "(hard 3;" in table.note
    assert "over 14 connected runs" in table.note
    assert report._collapsed_table(load_runs(_write_runs(tmp_path / "none", _capacity_rows(8, 2.0)))) is None


def test_capacity_section_tests_the_interaction_and_draws_the_figure(tmp_path):
    small = load_runs(_write_runs(tmp_path / "c4", _capacity_rows(4, 0.0)))
    large = load_runs(_write_runs(tmp_path / "c8", _capacity_rows(8, 2.0)))
    (tmp_path / "c8" / report_sections.FILES_DIR).mkdir()
    section = report._capacity_section(large, small, tmp_path / "c8")  # either order: by C
    tables, figures = section.tables, section.figures
    # the other capacity's verdicts and pairs, then the pooled test
    assert [t.title for t in tables] == ["Does a harder task learn a denser, deeper graph? (C = 4, features at τ = 0.006)",
                                         "Harder − easier dataset, per feature (C = 4, features at τ = 0.006)",
                                         "Does the difficulty effect grow with capacity? (C = 4 → 8)"]
    assert section.lines[0].startswith("C = 4, features at τ = 0.006, 15 runs: 0 of 5 features follow")
    assert section.lines[1].startswith("Pooled test, C = 4 → 8: the difficulty effect grows for ")
    assert "(mean_degree" in section.lines[1] or ", mean_degree" in section.lines[1]
    assert [name for name, _ in section.claim] == ["C = 4", "C = 8"]
    verdict = {row[0]: row[-1] for row in tables[2].rows}
    assert set(verdict) == {"sparsity", "nodes", "mean_degree", "parameters", "log_paths"}
    assert verdict["mean_degree"] == "grows"  # a planted trend at C = 8 only, perfectly ordered
    assert (tmp_path / "c8" / report_sections.FILES_DIR / figures[0].file).read_bytes()[:4] == b"\x89PNG"
    claim = report._claim_figure(section.claim, tmp_path / "c8")
    assert claim.error == "" and (tmp_path / "c8" / report_sections.FILES_DIR / claim.file).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(report.DagwireError, match="same C"):
        report._capacity_section(large, large, tmp_path / "c8")


def test_an_embedding_process_that_died_is_made_again_here(monkeypatch):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    died = Future()
    died.set_exception(BrokenProcessPool("a process in the process pool was terminated abruptly"))
    monkeypatch.setattr(report_sections, "pooled_embedding", lambda df, tau: ("made here", [tau]))
    assert report_sections._embedding_result(died, None, 0.006) == ("made here", [0.006])
    done = Future()
    done.set_result(("made there", []))
    assert report_sections._embedding_result(done, None, 0.006) == ("made there", [])
