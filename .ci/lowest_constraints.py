"""Print pip constraints pinning every runtime dependency of pyproject.toml to its floor (`>=X` -> `==X`),
so that CI can prove the floors true: the lowest allowed versions install and pass the tests."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*(?P<specs>[^;]*)")


def floors(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = []
    for dependency in dependencies:
        match = REQUIREMENT.match(dependency)
        floor = re.search(r">=\s*([0-9][^,\s]*)", match["specs"]) if match else None
        if match is None or floor is None:
            raise SystemExit(f"{dependency!r} has no >= floor; every runtime dependency needs one")
        pins.append(f"{match['name']}=={floor.group(1)}")
    return pins


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print("\n".join(floors(root / "pyproject.toml")))
