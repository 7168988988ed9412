"""Where a run's or a sweep's files are, recorded in a form that resolves on another machine.

A place beside or inside the dagwire checkout is recorded relative to it, as
`<checkout>/../shared/data` or `<checkout>/<path>`, and resolved against the checkout that reads
the record; any other place stays an absolute path. A sweep.yaml (`portable_identity`) and each
run's config.yaml (`recorded_config`) record their data_dir and initial graph file so; both are
read back as absolute paths of this machine (`resolved_config`, `config.read_yaml`), so an old
absolute record and a new relative one of the same place give the same run.
`upgrade_config_file` rewrites an older run's config.yaml in the recorded form, every other value
unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHECKOUT = "<checkout>"
#: The shared data beside the checkout (MNIST's official files, on the machines the study ran on).
SHARED_DATA = f"{CHECKOUT}/../shared/data"
#: The graph values that name no file.
_GRAPH_KINDS = ("complete", "local")


def checkout_root() -> Path:
    """The root of the dagwire checkout this code runs from (<root>/src/dagwire/portable.py)."""
    return Path(__file__).resolve().parents[2]


def resolved_path(recorded: str | os.PathLike) -> str:
    """A recorded path as an absolute path on this machine (`<checkout>` is this checkout's root)."""
    text = str(recorded)
    if text == CHECKOUT or text.startswith(CHECKOUT + "/"):
        return str((checkout_root() / text[len(CHECKOUT) + 1:]).resolve())
    return str(Path(text).expanduser().resolve())


def recorded_path(path: str | os.PathLike) -> str:
    """A path as a record holds it: relative to the checkout when it lies in its shared data or inside it."""
    absolute = Path(resolved_path(path))
    for anchor in (SHARED_DATA, CHECKOUT):  # the shared data lies outside the checkout: look there first
        try:
            inside = absolute.relative_to(resolved_path(anchor))
        except ValueError:
            continue
        return anchor if inside == Path() else f"{anchor}/{inside.as_posix()}"
    return str(absolute)


def _path_fields(values: dict[str, Any]) -> list[str]:
    """The keys of a config's values that name a place: data_dir, and graph when it is a file."""
    keys = ["data_dir"] if values.get("data_dir") else []
    graph = values.get("graph")
    if graph and str(graph) not in _GRAPH_KINDS:
        keys.append("graph")
    return keys


def recorded_config(values: dict[str, Any]) -> dict[str, Any]:
    """Config values with each place (data_dir, a graph file) in its recorded form; every other value as given."""
    return {**values, **{key: recorded_path(values[key]) for key in _path_fields(values)}}


def resolved_config(values: dict[str, Any]) -> dict[str, Any]:
    """Config values with each place (data_dir, a graph file) as an absolute path on this machine."""
    return {**values, **{key: resolved_path(values[key]) for key in _path_fields(values)}}


def upgrade_config_file(path: str | os.PathLike) -> bool:
    """Rewrite a run's config.yaml with its places in the recorded form; True when it did, False when they were.

    Only those values change: the file is the same YAML dump of the same values otherwise, as
    `TrainConfig.save` writes it.
    """
    import yaml

    from .files import atomic_write_text

    path = Path(path)
    stored = yaml.safe_load(path.read_text())
    if not isinstance(stored, dict):
        return False
    upgraded = recorded_config(stored)
    if upgraded == stored:
        return False
    atomic_write_text(path, yaml.safe_dump(upgraded, sort_keys=False))
    return True


def portable_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """A sweep.yaml's contents with each place (data_dir, a graph file) in its recorded form; nothing else changes."""
    out = {**identity, "config": recorded_config(dict(identity["config"]))}
    if identity.get("per_dataset"):
        out["per_dataset"] = {d: recorded_config(dict(v)) for d, v in identity["per_dataset"].items()}
    return out
