"""Command-line options built from their one declaration: `TrainConfig`'s fields.

`train_options` gives a command every `dagwire train` flag: `--field-name` for each field, typed
from its annotation, with the help text of its metadata and its default shown. cli.py and the
sweep command both import it from here, so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Callable

import click

from .config import TrainConfig

_TYPES = {"int": int, "float": float, "str": str}


def _flag_type(annotation: str) -> Any:
    """The click type of a field annotation such as 'int | None' (lists are given as text)."""
    base = annotation.split("|")[0].strip()
    return _TYPES.get(base, str)


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def train_options(fn: Callable) -> Callable:
    """Decorate a command with --config and one flag per TrainConfig field (None: not given)."""
    hints = {f.name: f.type for f in fields(TrainConfig)}
    options = [click.option("--config", "config_path", type=click.Path(dir_okay=False),
                            help="YAML file of options (flags win).")]
    for f in fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        help_text = meta.get("help", "")
        default = f.default if f.default is not MISSING else None
        shown = _default_text(default)
        if shown:
            help_text += f" [default: {shown}]"
        annotation = str(hints[f.name])
        if annotation.startswith("bool"):
            # keyword 'compile' shadows a builtin in the command's signature: pass it as compile_
            options.append(click.option(f"{name}/--no-{name[2:]}", f.name + ("_" if f.name == "compile" else ""),
                                        default=None, help=help_text))
        elif "choices" in meta:
            options.append(click.option(name, type=click.Choice(list(meta["choices"])), help=help_text))
        else:
            options.append(click.option(name, type=str if meta.get("text") else _flag_type(annotation),
                                        help=help_text))
    for option in reversed(options):
        fn = option(fn)
    return fn


def train_option_params() -> list[click.Parameter]:
    """The parameters `train_options` adds, in reading order (for a command built without the decorator)."""

    def holder(**kwargs: Any) -> dict:  # pragma: no cover - only collects the decorators' parameters
        return kwargs

    decorated = train_options(holder)
    # click stores decorator parameters innermost first; a command lists them in reading order.
    return list(reversed(getattr(decorated, "__click_params__", [])))

