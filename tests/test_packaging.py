"""What a new user meets first: the console scripts and the compose file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_console_scripts_exist_and_answer() -> None:
    bin_dir = Path(sys.executable).parent
    for script in ("kvproxy", "kvrocks-cloud"):
        result = subprocess.run([str(bin_dir / script), "--version"], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0
        assert script in result.stdout


def test_docker_compose_file_parses() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is not installed: the project's setup installs it")
    result = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "apache/kvrocks" in result.stdout
    assert "kvrocks:6666" in result.stdout
