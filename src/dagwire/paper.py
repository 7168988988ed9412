"""The paper's published numbers (Janik & Nowak 2022), mean and std over its 10 runs per dataset.

Copied from paper.txt as printed; the report shows them beside a sweep's own numbers.
"""

from __future__ import annotations

PAPER_LABEL = "paper (Janik & Nowak 2022, 100 epochs, full scale)"


PAPER_DATASETS = ("cmnist", "ckmnist", "cfashionmnist", "cifar10", "cifar10_t8")


# The paper's published numbers, mean and std over its 10 runs per dataset, in its dataset order
# (cmnist, ckmnist, cfashionmnist, cifar10, cifar10_t8). Copied from paper.txt as printed.
_P = PAPER_DATASETS


def _paper_row(*pairs: tuple[float, float]) -> dict[str, tuple[float, float]]:
    return dict(zip(_P, pairs))


PAPER_TABLES: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    # Table 1: structural characteristics at τ = 0.006 (60 nodes, 1770 edges, 863.3k parameters).
    "table1": {
        "sparsity": _paper_row((0.988, 0.003), (0.982, 0.004), (0.935, 0.008), (0.831, 0.016), (0.788, 0.012)),
        "sparsity_stage_0": _paper_row((0.981, 0.015), (0.983, 0.009), (0.905, 0.023), (0.791, 0.037), (0.712, 0.034)),
        "sparsity_stage_1": _paper_row((0.989, 0.006), (0.989, 0.006), (0.936, 0.028), (0.725, 0.058), (0.754, 0.057)),
        "sparsity_stage_2": _paper_row((0.952, 0.020), (0.905, 0.012), (0.822, 0.035), (0.678, 0.046), (0.573, 0.061)),
        "nodes": _paper_row((12.5, 2.3), (17.0, 2.1), (26.9, 2.3), (48.5, 2.6), (48.2, 1.5)),
        "nodes_stage_0": _paper_row((3.6, 1.8), (3.5, 1.2), (8.8, 1.0), (15.6, 0.7), (16.5, 1.1)),
        "nodes_stage_1": _paper_row((2.9, 1.1), (3.7, 1.3), (7.4, 1.5), (17.3, 1.6), (14.9, 1.3)),
        "nodes_stage_2": _paper_row((6.0, 1.3), (9.8, 0.9), (10.7, 1.5), (15.6, 1.8), (16.8, 1.2)),
        # Printed as "166k ± 30k" ...; CFashionMNIST's "333k + 34k" is read as ±.
        "parameters": _paper_row((166e3, 30e3), (253e3, 34e3), (333e3, 34e3), (615e3, 49e3), (613e3, 24e3)),
    },
    # Table 2: graph characteristics at τ = 0.006.
    "table2": {
        "log_paths": _paper_row((4.03, 1.03), (5.50, 0.87), (11.76, 0.81), (18.47, 1.31), (21.37, 1.27)),
        "mean_path": _paper_row((7.44, 1.05), (8.95, 0.76), (11.28, 0.85), (16.42, 0.99), (18.21, 1.25)),
        "max_path": _paper_row((9.60, 1.35), (12.00, 1.41), (18.80, 1.75), (28.00, 2.49), (32.60, 2.63)),
        "ln_communicability": _paper_row((-3.26, 1.86), (-3.86, 1.28), (5.52, 1.37), (11.03, 0.90), (14.59, 0.74)),
        "edge_connectivity": _paper_row((1.30, 0.48), (1.30, 0.48), (4.80, 2.49), (13.60, 3.44), (20.20, 1.99)),
        "mean_degree": _paper_row((3.48, 0.46), (3.75, 0.30), (8.53, 0.67), (12.31, 0.86), (15.58, 0.73)),
        "pca_elongation": _paper_row((0.78, 0.15), (0.72, 0.10), (0.52, 0.06), (0.37, 0.06), (0.44, 0.06)),
    },
    # Table 3: mean epoch time in seconds on a GeForce RTX 2080 Ti. The text of CIFAR10_T8's row
    # lost its decimal points ("107 42+5 53", "6945 ± 548"): read as 107.42 ± 5.53 and 69.45 ± 5.48.
    "table3": {
        "seconds_full": _paper_row((151.99, 17.73), (147.03, 19.55), (149.71, 19.46), (120.98, 16.59), (107.42, 5.53)),
        "seconds_retrain": _paper_row((21.65, 3.28), (26.05, 4.39), (41.09, 16.92), (75.29, 3.07), (76.09, 3.63)),
        "seconds_retrain_fitc": _paper_row((21.81, 3.60), (25.84, 7.00), (32.77, 2.33), (59.23, 13.23), (69.45, 5.48)),
    },
    # Table 4: edge dynamics. C's stds above 100 (e.g. CMNIST's 266.80) are impossible for a
    # percentage over runs but are what the paper prints.
    "table4": {
        "dyn_A": _paper_row((50.00, 6.50), (48.37, 7.14), (61.95, 13.32), (53.75, 23.85), (63.41, 17.51)),
        "dyn_B": _paper_row((3.79, 1.76), (3.82, 1.79), (5.78, 0.72), (5.34, 0.59), (6.61, 0.33)),
        "dyn_C": _paper_row((49.33, 266.80), (52.76, 43.24), (47.44, 101.95), (74.93, 23.98), (76.08, 25.40)),
        "dyn_D": _paper_row((1.64, 0.57), (2.19, 0.16), (1.90, 0.24), (5.93, 0.43), (5.38, 0.31)),
        "dyn_edges": _paper_row((23.00, 5.57), (33.70, 6.15), (115.10, 13.57), (299.00, 26.51), (375.50, 20.12)),
    },
}


# Table 5 (test accuracy in %, full DAG vs the local subgraph |i − j| ≤ 10 of App. D.1). The paper
# does not name the dataset; 92.8 % is CIFAR10's level in Janik & Nowak (2020), so it is shown
# beside our cifar10 rows only. It has no "retrained, same C" column.
PAPER_TABLE5_DATASET = "cifar10"


PAPER_TABLE5: dict[str, dict[str, tuple[float, float]]] = {
    "full": {"standard": (92.849, 0.152), "thresholded": (92.786, 0.123), "retrained_fitc": (92.967, 0.253)},
    "local": {"standard": (92.901, 0.193), "thresholded": (92.886, 0.220), "retrained_fitc": (93.265, 0.178)},
}
