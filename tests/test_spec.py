"""Graph specs and graph.json: constructors, round trip, and every kind of bad file."""

import json

import pytest

from dagwire import spec as specs
from dagwire.cli import main
from dagwire.errors import SpecError


def test_constructors():
    full = specs.complete(60, 3)
    assert full.num_edges == 1770 and full.stages == (20, 20, 20)
    assert full.stage_of(0) == 0 and full.stage_of(19) == 0 and full.stage_of(20) == 1 and full.stage_of(59) == 2
    loc = specs.local(60, 3, 10)
    assert all(0 < j - i <= 10 for i, j in loc.edges)
    assert loc.num_edges == sum(min(10, 59 - i) for i in range(60))
    custom = specs.from_edge_list(5, (2, 3), [(3, 4), (0, 3), (0, 3)])
    assert custom.edges == ((0, 3), (3, 4))
    assert custom.active_nodes() == [0, 3, 4]


def test_round_trip_keeps_edges_weights_and_extra_keys(tmp_path):
    g = specs.from_edge_list(4, (2, 2), [(0, 1), (1, 3), (0, 2), (2, 3)]).with_weights([0.1, 0.2, 0.3, 0.4])
    specs.save(g, tmp_path / "g.json", dataset="cmnist", seed=3)
    obj = json.loads((tmp_path / "g.json").read_text())
    assert obj["format"] == "dagwire-graph/1" and obj["dataset"] == "cmnist"
    assert obj["edges"] == [[0, 1, 0.1], [0, 2, 0.2], [1, 3, 0.3], [2, 3, 0.4]]
    again = specs.load(tmp_path / "g.json")
    assert again == g and again.meta["seed"] == 3


def test_edges_given_out_of_order_are_sorted_with_their_weights():
    g = specs.from_dict({"num_nodes": 3, "stages": [3], "edges": [[1, 2, 0.7], [0, 1, 0.2]]})
    assert g.edges == ((0, 1), (1, 2)) and g.weights == (0.2, 0.7)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"num_nodes": 3, "stages": [3]}', "missing key 'edges'"),
        ('{"num_nodes": 3, "stages": [3], "edges": [[1, 1, 0.5]]}', "forward"),
        ('{"num_nodes": 3, "stages": [3], "edges": [[2, 1, 0.5]]}', "forward"),
        ('{"num_nodes": 3, "stages": [3], "edges": [[0, 5, 0.5]]}', "out of range"),
        ('{"num_nodes": 3, "stages": [3], "edges": [[0, 1, -0.5]]}', "weight"),
        ('{"num_nodes": 3, "stages": [3], "edges": [[0, 1, NaN]]}', "weight"),
        ('{"num_nodes": 3, "stages": [3], "edges": [[0, 1, Infinity]]}', "weight"),
        ('{"num_nodes": 4, "stages": [3], "edges": [[0, 1, 0.5]]}', "sum to 3"),
        ('{"num_nodes": 3, "stages": [3], "edges": [[0, 1], [0, 1]]}', "twice"),
        ('{"num_nodes": 3, "stages": [3], "edges": [["a", 1]]}', "is not \\[i, j\\]"),
        ('[1, 2]', "JSON object"),
        ('{"format": "other/2", "num_nodes": 3, "stages": [3], "edges": []}', "format"),
    ],
)
def test_bad_graph_files(tmp_path, content, message, capsys):
    path = tmp_path / "g.json"
    path.write_text(content)
    with pytest.raises(SpecError, match=message):
        specs.load(path)
    assert main(["describe", "--graph", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_graph_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        specs.load(tmp_path / "none.json")


def test_stages_must_divide_nodes():
    with pytest.raises(SpecError, match="divide"):
        specs.complete(10, 3)
