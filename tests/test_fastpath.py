"""The C scanner is built, and a proxy running without it says so.

resp.py falls back to pure-Python scanners when ``kvproxy.proxy._scan`` cannot
be imported. That keeps the proxy working where there is no compiler, but it
is some 50x slower, so losing the extension must never go unnoticed: the
proxy logs a WARNING at start, and in CI (``CI`` set) the build is required.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kvproxy.proxy import resp
from tests.servers import Proxy, Upstream

WARNING_TEXT = "pure-Python RESP scanner"

# Loaded by site.py at interpreter start (PYTHONPATH points at its directory),
# before kvproxy is imported: the import of the extension then fails exactly as
# it does where it was never built, and everything else runs unchanged.
HIDE_EXTENSION = '''
import sys


class HideScanner:
    """Finds nothing for kvproxy.proxy._scan: as if the build had been skipped."""

    def find_spec(self, name, path=None, target=None):
        if name == "kvproxy.proxy._scan":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)",
                                      name=name)
        return None


sys.meta_path.insert(0, HideScanner())
'''


def in_ci() -> bool:
    """CI systems set CI (usually to "true"); an empty, "0" or "false" value means no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def c_extension_error() -> str | None:
    """Why the extension cannot be imported, or None when it can."""
    try:
        from kvproxy.proxy import _scan  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def test_c_scanner_is_built_and_used() -> None:
    """Fails in CI without the extension, so CI cannot pass on the slow path."""
    error = c_extension_error()
    if error is not None:
        message = f"kvproxy.proxy._scan is not importable ({error}): pip install -e . with gcc"
        if in_ci():
            pytest.fail(f"CI is set and {message}")
        pytest.skip(message)
    from kvproxy.proxy import _scan

    assert resp.scan_run is _scan.scan_run
    assert resp.scan_replies is _scan.scan_replies


def test_proxy_without_the_extension_warns_and_still_works(
        make_upstream: Callable[..., Upstream], make_proxy: Callable[..., Proxy],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide = tmp_path / "hide-scanner"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_EXTENSION)
    monkeypatch.setenv("PYTHONPATH", str(hide))
    proxy = make_proxy(make_upstream().port)
    assert proxy.client().ping() is True
    warnings = [line for line in proxy.log().splitlines() if WARNING_TEXT in line]
    assert len(warnings) == 1, proxy.log()
    assert " WARNING " in warnings[0]
    assert "hidden by the test" in warnings[0]


def test_proxy_with_the_extension_does_not_warn(pair_proxy: Proxy) -> None:
    if c_extension_error() is not None:
        pytest.skip("kvproxy.proxy._scan is not built here; test_c_scanner_is_built_and_used "
                    "says why")
    assert pair_proxy.client().ping() is True
    assert WARNING_TEXT not in pair_proxy.log()
