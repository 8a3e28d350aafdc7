"""The wheel installs the daemon, its plugins and the shipped policies.

Builds a wheel of this checkout (from a copy, so the tree is not touched), installs it with
its dependencies into a fresh virtual environment (no system site-packages, the package
index reachable), and checks that the installed ``audiopolicyd --check-config`` finds the 7
shipped policy files inside that environment's site-packages, with the record plugin's
settings schema (so ``audiopolicyd.plugins`` was installed too).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import child_env

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = ("ambient", "audioProcessing", "multiRoute", "playAndRecord", "playback",
              "record", "soloAmbient")


def _run(argv: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(600)
def test_wheel_installs_daemon_with_shipped_policies(tmp_path: Path) -> None:
    env = child_env({"XDG_CONFIG_HOME": str(tmp_path / "config"),
                     "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    env.pop("VIRTUAL_ENV", None)
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".venv-*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))

    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)], env)
    (wheel,) = wheels.glob("audiopolicyd-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env)
    _run([str(venv / "bin" / "pip"), "install", str(wheel)], env)

    out = _run([str(venv / "bin" / "audiopolicyd"), "--check-config"], env)
    (line,) = [ln for ln in out.splitlines() if ln.startswith("policies valid: ")]
    files = [Path(p) for p in line.removeprefix("policies valid: ").split(", ")]
    assert sorted(p.stem for p in files) == sorted(CATEGORIES)
    site = Path(_run([str(venv / "bin" / "python"), "-c",
                      "import audiopolicyd, os; print(os.path.dirname(audiopolicyd.__file__))"],
                     env).strip())
    assert site.is_relative_to(venv) and site.parent.name == "site-packages", site
    for path in files:
        assert path.parent == site / "policies", path
        assert path.is_file()

    checked = _run([str(venv / "bin" / "audiopolicyctl"), "policy", "check"], env)
    assert checked.strip() == f"valid: {len(CATEGORIES)} policy file(s)"
