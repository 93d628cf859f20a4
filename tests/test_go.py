"""The Go tests in go-integration/, run against a proxy this suite starts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import Proxy

GO_DIR = Path(__file__).resolve().parent.parent / "go-integration"


def test_go_client_through_the_proxy(pair_proxy: Proxy, tmp_path: Path) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is not installed: the project's setup installs golang-go")
    env = dict(os.environ, KVPROXY_ADDR=f"127.0.0.1:{pair_proxy.port}", GO111MODULE="off",
               GOPATH="/usr/share/gocode", GOCACHE=str(tmp_path / "gocache"), GOFLAGS="")
    result = subprocess.run([go, "test", "-count=1", "-v", "./..."], cwd=GO_DIR, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "--- SKIP" not in output
    for name in ("TestPipelinedSetGet", "TestMultiExec", "TestPubSub", "TestKvcloudStatusAndHelp"):
        assert f"--- PASS: {name}" in output, output
