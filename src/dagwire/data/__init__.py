"""Datasets of SPEC §3 (a package; its modules are split out of fetch.py in the next commit)."""

from .fetch import *  # noqa: F401,F403
