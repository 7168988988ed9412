"""Edge dynamics (SPEC §7, App. D, Table 4): how edge magnitudes move during training. Torch-free."""

from __future__ import annotations

import numpy as np


def dice(a: set, b: set) -> float:
    """Sørensen–Dice coefficient 2|A∩B| / (|A| + |B|) (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return 2.0 * len(a & b) / (len(a) + len(b))


def edge_dynamics(history: np.ndarray, retained: np.ndarray, tau: float) -> dict[str, float]:
    """Table 4 (A)–(D) and the epoch-1 DSC scores for one run.

    history: epochs × edges of |tanh w| after each epoch; retained: boolean mask of the edges kept
    in the pruned graph.
    """
    history = np.asarray(history, dtype=float)
    retained = np.asarray(retained, dtype=bool)
    if history.ndim != 2 or history.shape[1] != retained.size:
        raise ValueError(f"history {history.shape} does not match {retained.size} edges")
    below = history < tau
    kept, cut = below[:, retained], below[:, ~retained]
    result = {
        "A": 100.0 * float(kept.any(axis=0).mean()) if kept.shape[1] else float("nan"),
        "B": float(kept.sum(axis=0).mean()) if kept.shape[1] else float("nan"),
    }
    # For eliminated edges: what happens after the first epoch that ends below τ.
    went_below = cut.any(axis=0)
    first = np.where(went_below, cut.argmax(axis=0), history.shape[0])
    after = np.arange(history.shape[0])[:, None] > first[None, :]
    values = history[:, ~retained]
    recovered = ((values > 10 * tau) & after).any(axis=0)
    above_after = ((values >= tau) & after).sum(axis=0)
    result["C"] = 100.0 * float(recovered[went_below].mean()) if went_below.any() else float("nan")
    result["D"] = float(above_after[went_below].mean()) if went_below.any() else float("nan")
    result["edges"] = int(retained.sum())
    result.update(epoch1_dsc(history[0], retained))
    return result


def epoch1_dsc(first_epoch: np.ndarray, retained: np.ndarray) -> dict[str, float]:
    """DSC of the pruned edge set against the same-size sets of largest and smallest edges after epoch 1."""
    m = int(retained.sum())
    order = np.argsort(-np.asarray(first_epoch), kind="stable")
    kept = set(np.flatnonzero(retained).tolist())
    largest = set(order[:m].tolist())
    smallest = set(order[len(order) - m:].tolist()) if m else set()
    return {"dsc_largest": dice(kept, largest), "dsc_smallest": dice(kept, smallest)}


# A run has collapsed when, at the end of its first learning-rate phase, it is still at chance
# (training accuracy below twice chance) while the L1 term has emptied most of the network (the
# median edge below a tenth of its initial |tanh w| = 0.5). Such a run has learned nothing yet
# and lost its edges to the penalty alone: its graph says nothing about the task.
COLLAPSE_CHANCE_FACTOR = 2.0
COLLAPSE_MEDIAN_EDGE = 0.05


def first_phase_epoch(milestone_steps: list[int], steps_per_epoch: int, epochs: int) -> int:
    """The epoch (from 1) at whose end the first learning-rate phase is over (the last epoch without a drop)."""
    first = min((m for m in milestone_steps if m > 0), default=epochs * steps_per_epoch)
    return min(max(1, -(-first // steps_per_epoch)), epochs)


def is_collapsed(train_accuracy: float, magnitudes, num_classes: int) -> bool:
    """Whether a run at its first phase's end is still at chance while most of its edges have shrunk away."""
    return bool(train_accuracy < COLLAPSE_CHANCE_FACTOR / num_classes
                and float(np.median(np.asarray(magnitudes, dtype=float))) < COLLAPSE_MEDIAN_EDGE)
