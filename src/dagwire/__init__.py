"""dagwire: learn what architecture a dataset asks for (Janik & Nowak 2022).

`dagwire.load(RUN, tau=None)` gives a finished run's pruned network; `dagwire.create_model(spec, ...)`
builds the network of any graph spec. Both are imported on first use, so that `import dagwire`
(and every command that needs no network) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["create_model", "load"]

if TYPE_CHECKING:
    from .export import load
    from .model import create_model

_LAZY = {"load": "export", "create_model": "model"}  # public name -> the module that defines it


def __getattr__(name: str) -> Any:
    """The public functions of `__all__`, imported from their modules when first asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
