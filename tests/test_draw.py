"""Drawings: graphs and threshold curves are written as valid PNG/SVG files, atomically."""

import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dagwire import draw, spec as specs  # noqa: E402
from dagwire.errors import DagwireError  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def trained_like(seed=0, n=24, stages=3, keep=0.25):
    rng = np.random.default_rng(seed)
    full = specs.complete(n, stages)
    kept = rng.random(full.num_edges) < keep
    weights = np.where(kept, rng.uniform(0.01, 0.8, full.num_edges), rng.uniform(0, 0.005, full.num_edges))
    return full.with_weights(weights.tolist())


def disconnected():
    # After τ = 0.006 the input reaches 1 and 2, the output is fed by 5 and 6: no path between them.
    g = specs.from_edge_list(8, (4, 4), [(0, 1), (0, 2), (1, 4), (5, 7), (6, 7), (5, 6)])
    return g.with_weights([0.5, 0.3, 0.001, 0.4, 0.8, 0.2])


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def only_file(directory, name):
    assert sorted(p.name for p in directory.iterdir()) == [name]  # no temporary file left behind


def threshold_rows():
    taus = [0.3, 0.0, 0.001, 0.003, 0.006, 0.01, 0.03, 0.1, 0.2]  # unsorted on purpose, τ = 0 included
    return [{"threshold": t, "test_accuracy": 0.9 - t, "sparsity": min(1.0, 0.8 + t), "nodes": 20,
             "disconnected": t >= 0.3} for t in taus]


def test_png_of_a_pruned_graph(tmp_path):
    out = tmp_path / "graph.png"
    draw.draw_graph(trained_like(), out, title="trained-like", tau=0.006)
    width, height = png_size(out)
    assert width > 300 and height > 300 and out.stat().st_size > 10_000
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (height, width) and image[..., :3].std() > 0.05  # not a blank canvas
    only_file(tmp_path, "graph.png")


def test_svg_and_overwrite(tmp_path):
    out = tmp_path / "graph.svg"
    out.write_text("old")
    draw.draw_graph(trained_like(1), out, tau=0.006)
    text = out.read_text()
    assert "<svg" in text[:2000] and text.rstrip().endswith("</svg>") and len(text) > 10_000
    only_file(tmp_path, "graph.svg")


def test_disconnected_graph_draws_the_thresholded_graph(tmp_path):
    out = tmp_path / "cut.png"
    draw.draw_graph(disconnected(), out, title="cut", tau=0.006)
    assert png_size(out)[0] > 300
    fig, ax = plt.subplots()
    draw.draw_graph(disconnected(), title="cut", tau=0.006, ax=ax)
    assert "disconnected" in ax.get_title() and "5 edges" in ax.get_title()
    plt.close(fig)
    # everything below τ: only the input and output nodes are left
    empty = disconnected().with_weights([0.0] * 6)
    draw.draw_graph(empty, tmp_path / "empty.png", tau=0.006)
    assert png_size(tmp_path / "empty.png")[0] > 100


def test_into_given_axes_saves_nothing(tmp_path):
    fig, axes = plt.subplots(1, 2)
    draw.draw_graph(trained_like(2), tmp_path / "ignored.png", title="a", tau=0.006, ax=axes[0])
    draw.draw_graph(trained_like(3).with_weights(None), ax=axes[1])  # unweighted, not pruned
    assert list(tmp_path.iterdir()) == []
    assert axes[0].get_title().startswith("a\n") and "τ = 0.006" in axes[0].get_title()
    plt.close(fig)
    with pytest.raises(ValueError):
        draw.draw_graph(trained_like(), None)


def test_complete_dag_draws_without_arrows(tmp_path):
    g = specs.complete(60, 3)
    draw.draw_graph(g.with_weights(np.linspace(0, 1, g.num_edges).tolist()), tmp_path / "k60.png")
    assert png_size(tmp_path / "k60.png")[0] > 300


def test_threshold_curve_png_and_svg(tmp_path):
    draw.plot_threshold_curve(threshold_rows(), tmp_path / "curve.png", title="CIFAR10 seed 0")
    width, height = png_size(tmp_path / "curve.png")
    assert width > 300 and height > 300 and (tmp_path / "curve.png").stat().st_size > 10_000
    draw.plot_threshold_curve(threshold_rows()[:1], tmp_path / "one.svg")  # a single τ = 0.3 point
    assert "<svg" in (tmp_path / "one.svg").read_text()[:2000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "one.svg"]


def test_unknown_suffix_leaves_nothing(tmp_path):
    before = plt.get_fignums()
    with pytest.raises(DagwireError, match="png"):
        draw.plot_threshold_curve(threshold_rows(), tmp_path / "curve.bmp")
    assert list(tmp_path.iterdir()) == []
    assert plt.get_fignums() == before  # the figure was closed anyway


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    fig = plt.figure()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError):
        draw.save_figure(fig, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
    assert not plt.fignum_exists(fig.number)


@pytest.mark.parametrize("costs, scale", [([45_000, 59_000], "linear"), ([5_900, 59_000], "log"),
                                          ([1_000, 59_000, float("nan")], "log"), ([float("nan")], "linear")])
def test_the_front_cost_axis_is_logarithmic_only_over_a_decade(costs, scale):
    """Below a decade a log axis has no major tick and its minor labels overlap: the front draws those linear."""
    fig, ax = plt.subplots()
    draw._cost_axis(ax, costs)
    assert ax.get_xscale() == scale
    ax.set_xlim(40_000, 60_000)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    if scale == "linear":
        assert labels and all(label.endswith("k") for label in labels)  # engineering notation: 45k, 50k, ...
    plt.close(fig)


def test_the_front_cost_axis_labels_do_not_run_into_each_other():
    """A linear span such as CMNIST's FLOPs (13.5M-15.3M) once got 8 labels as wide as "14.75M" on a half-page panel."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    draw._cost_axis(ax, [13.8e6, 14.3e6, 15.3e6])
    ax.set_xlim(13.3e6, 15.5e6)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
    assert len(boxes) >= 3
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:]))
    plt.close(fig)


def test_each_lam_of_the_front_is_labelled_once_beside_its_learned_graph():
    points = [{"lam": 0.0, "family": "complete"}, {"lam": 0.0, "family": "random"}, {"lam": 0.0, "family": "learned"},
              {"lam": 0.05, "family": "width"}, {"lam": 0.05, "family": "learned"}, {"lam": 0.1, "family": "random"},
              {"lam": 0.1, "family": "width"}]
    anchors = draw._lam_anchors(points)
    assert {lam: p["family"] for lam, p in anchors.items()} == {0.0: "learned", 0.05: "learned", 0.1: "random"}
    assert anchors[0.0] is points[2]
