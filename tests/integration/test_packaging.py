"""The wheel carries sql/ and the three packages (the full install smoke test is .ci/package_smoke.sh)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a clean export of the tracked files (what a fresh clone holds)."""
    work = tmp_path_factory.mktemp("package")
    if shutil.which("git") and (ROOT / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        for name in filter(None, tracked.decode().split("\0")):
            if (ROOT / name).is_file():
                (work / "src" / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, work / "src" / name)
    else:
        shutil.copytree(ROOT, work / "src", ignore=shutil.ignore_patterns(".git", "*.pyc", "__pycache__"))
    # No isolation: hatchling is installed here, and the test must not need the network.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(work / "dist"),
            str(work / "src"),
        ],
        check=True,
        capture_output=True,
    )
    [built] = (work / "dist").glob("rowhook-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_carries_every_sql_file_under_rowhook_sql(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    sql_files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "sql").rglob("*.sql")}
    tracked = subprocess.run(
        ["git", "ls-files", "sql"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    expected = {f"rowhook/{name}" for name in (tracked or sql_files)}
    assert expected, "no sql files found"
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"


def test_the_wheel_carries_the_three_packages_and_the_console_script(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for module in ("rowhook/cli.py", "rowhook/__main__.py", "relay/main.py", "api/server.py"):
        assert module in names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "rowhook = rowhook.cli:main" in wheel.read(entry_points).decode()


def test_the_package_smoke_script_exists_and_is_valid_bash() -> None:
    script = ROOT / ".ci" / "package_smoke.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert (ROOT / ".ci" / "package_smoke.py").exists()


def test_the_wheel_carries_the_openapi_ui_assets_and_their_licences(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for asset in (
        "api/assets/swagger-ui/swagger-ui-bundle.js",
        "api/assets/swagger-ui/swagger-ui-standalone-preset.js",
        "api/assets/swagger-ui/swagger-ui.css",
        "api/assets/swagger-ui/LICENSE",
        "api/assets/swagger-ui/NOTICE",
        "api/assets/scalar/standalone.js",
        "api/assets/scalar/scalar.css",
        "api/assets/scalar/LICENSE",
    ):
        assert asset in names, asset


def test_the_wheel_carries_every_file_of_the_delivery_portal(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    portal = {p.relative_to(ROOT).as_posix() for p in (ROOT / "api" / "portal").iterdir() if p.is_file()}
    assert {"api/portal/index.html", "api/portal/portal.js", "api/portal/portal.css"} <= portal
    assert portal <= names, f"missing from the wheel: {sorted(portal - names)}"
    assert "api/portal.py" in names
