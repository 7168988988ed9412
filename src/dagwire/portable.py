"""Where a sweep's data is, recorded in sweep.yaml in a form that resolves on another machine.

A data directory beside or inside the dagwire checkout is recorded relative to it, as
`<checkout>/../shared/data` or `<checkout>/<path>`, and resolved against the checkout that runs
the sweep; any other directory stays an absolute path. Runs get the resolved, absolute path
(their config.yaml records where their data was looked for).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHECKOUT = "<checkout>"
#: The shared data beside the checkout (MNIST's official files, on the machines the study ran on).
SHARED_DATA = f"{CHECKOUT}/../shared/data"


def checkout_root() -> Path:
    """The root of the dagwire checkout this code runs from (<root>/src/dagwire/sweep/portable.py)."""
    return Path(__file__).resolve().parents[3]


def resolved_path(recorded: str | os.PathLike) -> str:
    """A recorded path as an absolute path on this machine (`<checkout>` is this checkout's root)."""
    text = str(recorded)
    if text == CHECKOUT or text.startswith(CHECKOUT + "/"):
        return str((checkout_root() / text[len(CHECKOUT) + 1:]).resolve())
    return str(Path(text).expanduser().resolve())


def recorded_path(path: str | os.PathLike) -> str:
    """A path as sweep.yaml records it: relative to the checkout when it lies in its shared data or inside it."""
    absolute = Path(resolved_path(path))
    for anchor in (SHARED_DATA, CHECKOUT):  # the shared data lies outside the checkout: look there first
        try:
            inside = absolute.relative_to(resolved_path(anchor))
        except ValueError:
            continue
        return anchor if inside == Path() else f"{anchor}/{inside.as_posix()}"
    return str(absolute)


def portable_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """A sweep.yaml's contents with every data_dir in its recorded form (the same places; nothing else changes)."""
    def upgraded(values: dict[str, Any]) -> dict[str, Any]:
        if not values.get("data_dir"):
            return values
        return {**values, "data_dir": recorded_path(values["data_dir"])}

    out = {**identity, "config": upgraded(dict(identity["config"]))}
    if identity.get("per_dataset"):
        out["per_dataset"] = {d: upgraded(dict(v)) for d, v in identity["per_dataset"].items()}
    return out
