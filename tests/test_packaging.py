"""Packaging rules: exact pins live in constraints.txt, never in the package metadata (a hard torch pin in
pyproject.toml fights JetPack's own torch wheels), and every extra's library the code needs is pinned there."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO


def test_no_exact_pins_in_package_metadata():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + [r for extra in meta["optional-dependencies"].values() for r in extra]
    pinned = [r for r in reqs if "==" in r]
    assert pinned == [], f"exact pins belong in constraints.txt: {pinned}"


def test_torch_and_shapely_are_pinned_in_constraints():
    text = (REPO / "constraints.txt").read_text()
    assert re.search(r"^torch==\d", text, re.M)
    assert re.search(r"^shapely==2\.", text, re.M)
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(r.startswith("shapely") for r in meta["optional-dependencies"]["ground"])
    assert "ground" in (REPO / "scripts" / "setup.sh").read_text()
