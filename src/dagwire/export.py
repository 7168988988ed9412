"""The learned network outside dagwire: `load` a finished run's pruned network, `export` it to a
file that runs without dagwire (a torch.export program, .pt2, or ONNX, .onnx).

Both start from the same network: the run's learned graph thresholded at τ, dead paths removed,
materialised with only the kept edges and live nodes holding parameters (`model.materialise`),
with the trained weights, in eval mode. An export traces the network's plain path (autograd's own
ops, `DagNet.use_fast_kernels(False)`), so no hand-written kernel of kernels.py is in the file,
with a dynamic batch dimension. Beside the file, FILE.json (m.pt2 -> m.pt2.json) says how to feed
it: input size and channels, the normalisation, class names, τ and the pruned graph with its features.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import torch

from . import graphs
from .config import STAR
from .errors import DagwireError
from .files import atomic_write, atomic_write_text
from .model import DagNet, count_parameters, materialise
from .spec import GraphSpec

if TYPE_CHECKING:
    from .data import Dataset
    from .prune import TrainedRun

EXPORT_FORMAT = "dagwire-export/1"
EXPORT_SUFFIXES = (".pt2", ".onnx")
Tau = Union[float, Literal["star"], None]
BATCH = "batch"  # the name of the exported files' dynamic first dimension
ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
ONNX_EXTRA = "pip install 'dagwire[export]' (onnx, onnxscript, onnxruntime)"


@dataclass
class LearnedNetwork:
    """A run's network pruned at τ: the run, τ, the pruned graph (with |tanh w|) and the module."""

    trained: "TrainedRun"
    tau: float
    pruned: GraphSpec
    model: DagNet


@dataclass
class Exported:
    """What `export` wrote: the file, its JSON sidecar, and what they describe."""

    path: Path
    sidecar: Path
    tau: float
    parameters: int
    nodes: int


def resolve_tau(trained: "TrainedRun", tau: Tau) -> float:
    """The τ a run is pruned at: its own threshold (None), its τ* ("star", `taustar.run_tau_star`), or `tau` itself."""
    if tau is None:
        return float(trained.config.threshold)
    if isinstance(tau, str):
        if tau.strip().lower() != STAR:
            raise DagwireError(f"τ must be a number >= 0, None or '{STAR}', got {tau!r}")
        from .taustar import run_tau_star

        return run_tau_star(trained.path)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau >= 0):
        raise DagwireError(f"τ must be a finite number >= 0, None or '{STAR}', got {tau!r}")
    return float(tau)


def learned_network(run: str | os.PathLike, tau: Tau = None, device: str = "cpu") -> LearnedNetwork:
    """The run's trained network pruned at τ (see `load`), with what it came from."""
    from .prune import load_run

    trained = load_run(run, device)
    value = resolve_tau(trained, tau)
    pruned = graphs.prune(trained.learned, value)
    if not graphs.is_connected(pruned):
        raise DagwireError(f"at τ={value:g} the learned graph of {run} is disconnected: no path from input to output")
    model = materialise(trained.model, pruned.with_weights(None)).eval()
    return LearnedNetwork(trained, value, pruned, model)


def load(run: str | os.PathLike, tau: Tau = None, device: str = "cpu") -> DagNet:
    """The trained network of a finished run, pruned at τ, in eval mode (τ: None = the run's own, "star" = τ*).

    Thresholded at τ, dead paths removed and physically pruned: only kept edges and live nodes
    hold parameters. It takes batches of normalised images ((pixels / 255 - mean) / std per
    channel, `dagwire.data.normalize_batch`) and gives logits, on `device`. DagwireError (one
    line) for a directory that is not a run, a run that has not finished, or a τ that disconnects
    input from output.
    """
    return learned_network(run, tau, device).model


def sidecar_path(output: str | os.PathLike) -> Path:
    """FILE.json beside an exported FILE (m.pt2 -> m.pt2.json)."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def export_info(net: LearnedNetwork, data: "Dataset", file_name: str) -> dict[str, Any]:
    """The sidecar JSON: what the exported network takes, gives and is."""
    config = net.trained.config
    channels = int(data.train_x.shape[1])
    graph = dataclasses.replace(net.pruned, meta={}).to_dict()
    return {
        "format": EXPORT_FORMAT,
        "file": file_name,
        "input": {
            "name": ONNX_INPUT, "shape": [BATCH, channels, data.image_size, data.image_size], "dtype": "float32",
            "normalisation": "(pixels / 255 - mean) / std, per channel", "mean": list(data.mean), "std": list(data.std),
        },
        "output": {"name": ONNX_OUTPUT, "shape": [BATCH, data.num_classes], "dtype": "float32"},
        "classes": list(data.classes),
        "tau": net.tau,
        "run": str(net.trained.path),
        "dataset": config.dataset,
        "seed": config.seed,
        "channels": config.channels,
        "parameters": count_parameters(net.model),
        "features": graphs.recorded_features(net.trained.learned, net.tau),
        "graph": graph,
    }


def plain_copy(model: DagNet) -> DagNet:
    """The network for tracing: its plain path (no hand-written kernels), on the CPU, in eval mode."""
    import copy

    return copy.deepcopy(model).cpu().eval().use_fast_kernels(False)


def export_program(model: DagNet, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export of the network's plain path, the batch dimension dynamic."""
    batch = torch.export.Dim(BATCH, min=1)
    return torch.export.export(plain_copy(model), (example,), dynamic_shapes=({0: batch},))


def onnx_model(model: DagNet, example: torch.Tensor):
    """The ONNX model (an onnx.ModelProto) of the network's plain path, the batch dimension dynamic, checked."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it; fail here with the extra's name)
    except ImportError:
        raise DagwireError(f"ONNX export needs the optional extra: {ONNX_EXTRA}") from None
    # The exporter logs the torchvision ops it cannot register and warns about its own internals;
    # neither concerns this network, whose every op is checked below.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(plain_copy(model), (example,), dynamo=True, verbose=False,
                                        input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                        dynamic_shapes=({0: BATCH},))
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(run: str | os.PathLike, output: str | os.PathLike, tau: Tau = None) -> Exported:
    """Write the run's network pruned at τ to FILE.pt2 (torch.export) or FILE.onnx, and `sidecar_path(FILE)`."""
    from .data import load_dataset_for

    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise DagwireError(f"-o {output}: the file must end in {' or '.join(EXPORT_SUFFIXES)}")
    if output.is_dir():
        raise DagwireError(f"-o {output} is a directory")
    net = learned_network(run, tau)
    data = load_dataset_for(net.trained.config)
    example = torch.zeros(2, int(data.train_x.shape[1]), data.image_size, data.image_size)
    if suffix == ".pt2":
        program = export_program(net.model, example)
        atomic_write(output, lambda f: torch.export.save(program, f))
    else:
        proto = onnx_model(net.model, example)
        atomic_write(output, lambda f: f.write(proto.SerializeToString()))
    sidecar = sidecar_path(output)
    # One key a line with its value on it: readable keys, and a 60-node graph stays one line long.
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in export_info(net, data, output.name).items()]
    atomic_write_text(sidecar, "{\n" + ",\n".join(lines) + "\n}\n")
    return Exported(output, sidecar, net.tau, count_parameters(net.model), len(net.pruned.active_nodes()))
