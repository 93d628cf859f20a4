"""Entry points: ``kvproxy`` (the proxy) and ``kvrocks-cloud`` (backups without it)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from typing import Any

from kvproxy import __version__, logs
from kvproxy import config as configuration
from kvproxy.upstream.managed import ManagedServer, ManagedServerError

log = logging.getLogger("kvproxy")


def _hostport(value: str) -> tuple[str, int]:
    try:
        return configuration.MAIN_KEYS["listen"].parse(value)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def proxy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvproxy",
        description="Transparent RESP proxy in front of Kvrocks that answers KVCLOUD itself.",
    )
    parser.add_argument("--conf", metavar="FILE", help="kvcloud.conf to load")
    parser.add_argument("--listen", metavar="HOST:PORT", type=_hostport,
                        help="where clients connect (default 127.0.0.1:6667)")
    parser.add_argument("--upstream", metavar="HOST:PORT", type=_hostport,
                        help="the Kvrocks (or Redis) server (default 127.0.0.1:6666)")
    parser.add_argument("--managed", action="store_const", const=True,
                        help="start and stop the upstream server here (see docs/proxy.md)")
    parser.add_argument("--server-binary", metavar="PATH",
                        help="server to start with --managed (default: kvrocks, else redis-server)")
    parser.add_argument("--log-format", choices=("text", "json"))
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=f"kvproxy {__version__}")
    return parser


def load_config(path: str | None, overrides: dict[str, Any]) -> configuration.Config:
    loaded = configuration.load(path) if path else configuration.defaults()
    return loaded.with_overrides(**overrides)


def proxy_main(argv: list[str] | None = None) -> int:
    args = proxy_parser().parse_args(argv)
    try:
        config = load_config(args.conf, {
            "listen": args.listen, "upstream": args.upstream, "managed": args.managed,
            "server_binary": args.server_binary, "log_format": args.log_format,
            "log_level": args.log_level,
        })
    except configuration.ConfigError as exc:
        print(f"kvproxy: {exc}", file=sys.stderr)
        return 2
    logs.setup(config["log_format"], config["log_level"])
    _warn_without_fast_path()
    _install_uvloop()
    try:
        asyncio.run(_serve(config))
    except ManagedServerError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", *config["listen"], exc.strerror or exc)
        return 1
    return 0


def _warn_without_fast_path() -> None:
    """Say so at start when the C scanner is missing.

    Without a compiler at install time the build of ``kvproxy.proxy._scan`` is
    skipped and resp.py falls back to its pure-Python scanners: the proxy
    works, but its request and reply framing is some 50x slower. Nothing else
    would show it, so an image built without gcc would go unnoticed.
    """
    try:
        importlib.import_module("kvproxy.proxy._scan")
    except ImportError as exc:
        log.warning("the C scanner kvproxy.proxy._scan is not available (%s); using the "
                    "pure-Python RESP scanner, about 50x slower: reinstall kvproxy where a "
                    "C compiler is installed", exc)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        log.info("uvloop not installed; using the default asyncio loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(config: configuration.Config) -> None:
    from kvproxy.proxy.server import Proxy

    managed: ManagedServer | None = None
    if config["managed"]:
        managed = ManagedServer(config["server_binary"], config["upstream"],
                                config["server_dir"] or "kvproxy-data/server",
                                config["server_args"], config["server_config"])
        await managed.start()
    proxy = Proxy(config, managed)
    try:
        await proxy.start()
        await proxy.run_until_stopped()
    finally:
        if managed is not None:
            await managed.stop()
