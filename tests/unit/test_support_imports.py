"""The test support and the benchmarks import as packages from the repository root, each on its
own, with no ``sys.path`` edit anywhere (issue 10: ``tests/support/`` importable by bench/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = sorted(p.stem for p in (ROOT / "tests" / "support").glob("*.py")
                 if p.stem != "__init__")
BENCHMARKS = ("reaction", "churn", "mic_race", "routing", "unplug_leak")
#: Seconds a fresh interpreter gets to import one module (an upper bound, never a speed claim).
TIMEOUT = 60


def _fresh(*args: str) -> subprocess.CompletedProcess:
    """Run this interpreter from the repository root, without an inherited ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_the_support_modules_are_the_concerns_of_the_issue() -> None:
    assert {"bus", "servers", "clients", "audio", "daemon", "sessions", "portal"} <= set(SUPPORT)


@pytest.mark.parametrize("module", SUPPORT)
def test_each_support_module_imports_on_its_own(module: str) -> None:
    done = _fresh("-c", f"import tests.support.{module}")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_runs_as_a_module_of_the_repository(name: str) -> None:
    done = _fresh("-m", f"bench.{name}", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_no_support_or_bench_module_edits_sys_path() -> None:
    sources = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources
                 if "sys.path." in p.read_text() and p != Path(__file__).resolve()]
    assert offenders == []
