"""`make setup`'s pins: constraints.txt pins every library pyproject.toml asks for, inside pyproject's ranges."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    lines = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    pins = [Requirement(line) for line in lines if line and not line.startswith("#")]
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in pins), pins
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in pins}


def _asked_for() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def test_every_library_pyproject_asks_for_is_pinned_inside_its_range():
    pins = _pins()
    # torch: the Makefile installs its CPU wheel first, pinned there; dagwire[export]: the extra itself.
    asked = [r for r in _asked_for() if canonicalize_name(r.name) not in {"torch", "dagwire"}]
    assert len(asked) >= 15
    missing = [r.name for r in asked if canonicalize_name(r.name) not in pins]
    assert not missing, f"not pinned in constraints.txt: {missing}"
    outside = [f"{r.name}=={pins[canonicalize_name(r.name)]} not in {r.specifier}" for r in asked
               if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert not outside, outside


def test_the_makefile_installs_with_the_pins_and_torch_is_not_among_them():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e '.[test]'" in makefile and "torch==2.13.0" in makefile
    assert "torch" not in _pins()
