"""The runs table's files: written together, and left as they are when they already hold the table."""

import pandas as pd
import pyarrow.parquet as pq

from dagwire.tables import RUNS_CSV, RUNS_PARQUET, read_runs_table, runs_frame, write_runs_table


def _table(accuracy: float):
    return runs_frame([{"dataset": "cmnist", "seed": 0, "status": "done", "test_accuracy": accuracy, "nodes": 30,
                        "q1d": True},
                       {"dataset": "cmnist", "seed": 1, "status": "pending"}], stages=3)


def _files(sweep):
    return {name: ((sweep / name).stat().st_mtime_ns, (sweep / name).read_bytes()) for name in (RUNS_CSV, RUNS_PARQUET)}


def _as_written_elsewhere(path):
    """The same table in runs.parquet, its metadata naming another pandas: what another machine's set-up writes."""
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"pandas"] = meta[b"pandas"].replace(f'"pandas_version": "{pd.__version__}"'.encode(),
                                              b'"pandas_version": "0.0.0"')
    assert meta != table.schema.metadata
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_rewriting_the_same_table_touches_neither_file(tmp_path):
    write_runs_table(_table(0.9), tmp_path)
    _as_written_elsewhere(tmp_path / RUNS_PARQUET)
    before = _files(tmp_path)
    assert write_runs_table(_table(0.9), tmp_path) == []
    assert _files(tmp_path) == before  # the other writer's bytes kept: the cells are the same
    pd.testing.assert_frame_equal(read_runs_table(tmp_path / RUNS_PARQUET), _table(0.9))


def test_a_changed_cell_rewrites_both_files(tmp_path):
    write_runs_table(_table(0.9), tmp_path)
    _as_written_elsewhere(tmp_path / RUNS_PARQUET)
    before = _files(tmp_path)
    assert write_runs_table(_table(0.91), tmp_path) == [tmp_path / RUNS_CSV, tmp_path / RUNS_PARQUET]
    after = _files(tmp_path)
    assert all(after[name][1] != before[name][1] for name in before)
    for name in (RUNS_CSV, RUNS_PARQUET):
        pd.testing.assert_frame_equal(read_runs_table(tmp_path / name), _table(0.91))


def test_a_type_change_alone_rewrites_the_parquet_file(tmp_path):
    """An empty integer column written as floats: runs.csv reads the same (empty cells) and stays, runs.parquet is rewritten."""
    table = _table(0.9)
    assert table["retrained_fit_channels"].isna().all()
    write_runs_table(table.assign(retrained_fit_channels=table["retrained_fit_channels"].astype("float64")), tmp_path)
    csv = _files(tmp_path)[RUNS_CSV]
    assert pd.read_parquet(tmp_path / RUNS_PARQUET)["retrained_fit_channels"].dtype == "float64"
    assert write_runs_table(table, tmp_path) == [tmp_path / RUNS_PARQUET]
    assert _files(tmp_path)[RUNS_CSV] == csv
    assert pd.read_parquet(tmp_path / RUNS_PARQUET)["retrained_fit_channels"].dtype == "Int64"


def test_an_unreadable_parquet_file_is_written_afresh(tmp_path):
    write_runs_table(_table(0.9), tmp_path)
    (tmp_path / RUNS_PARQUET).write_bytes(b"not parquet")
    write_runs_table(_table(0.9), tmp_path)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / RUNS_PARQUET), _table(0.9))
