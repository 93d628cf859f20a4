"""The KVCLOUD command family, answered by the proxy itself.

Everything here is privileged like BGSAVE on Kvrocks (see ``_refusal``), except
HELP, which only describes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kvproxy import config as configuration
from kvproxy.config import Provider
from kvproxy.jobs.catalog import CatalogError, list_backups
from kvproxy.jobs.prune import PruneError, retention_policy, run_prune
from kvproxy.jobs.registry import Busy
from kvproxy.jobs.restore import run_restore
from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.swap import (
    SwapError,
    check_can_swap,
    keep,
    pending_swap,
    retain,
    run_revert,
    run_swap,
)
from kvproxy.jobs.targets import TargetError, select_providers
from kvproxy.jobs.verify import run_verify
from kvproxy.proxy.replies import Value, encode, error
from kvproxy.repo.manifest import BACKUP_ID
from kvproxy.storage.providers import open_store

if TYPE_CHECKING:
    from kvproxy.proxy.server import Proxy

log = logging.getLogger("kvproxy.kvcloud")

HELP = {
    "UPLOAD": "UPLOAD [provider ...] [WAIT] -- back up the server; replies a job id",
    "RESTORE": "RESTORE [provider] [backup-id|LATEST] [TO dir|SWAP] [WAIT] -- restore a backup "
               "into a directory, or swap it in under the managed server; then RESTORE KEEP, "
               "REVERT [WAIT] or RETAIN",
    "STATUS": "STATUS [job-id] -- state and progress of the current or a given job",
    "CONFIG": "CONFIG -- the loaded configuration, secrets shown as ***",
    "REFRESH": "REFRESH -- reload kvcloud.conf; an invalid file is refused and the old one stays",
    "LIST": "LIST [provider] -- the backups in a provider, newest first",
    "VERIFY": "VERIFY [provider] [backup-id|LATEST|ALL] [WAIT] -- check every object of backups",
    "CANCEL": "CANCEL [job-id] -- stop the running job; replies its final STATUS",
    "PRUNE": "PRUNE [provider ...] [DRYRUN] [WAIT] -- apply the retention policy, then delete "
             "unreferenced chunks",
    "HELP": "HELP -- this list",
}

#: Subcommands that read the bucket before they can answer.
LATER = (b"LIST", b"CANCEL")

#: Every field STATUS reports, in order, so clients can rely on the shape.
STATUS_FIELDS = tuple(JobStatus("", "", []).fields())
_NUMBERS = ("files", "bytes_total", "bytes_done", "bytes_uploaded", "bytes_deduplicated",
            "throughput")

#: Keys REFRESH cannot apply to a running proxy.
RESTART_KEYS = ("listen", "upstream", "upstream_password", "upstream_connections",
                "spare_connections", "managed", "server_binary", "server_args", "server_config",
                "server_dir")


class Caller(Protocol):
    @property
    def resp3(self) -> bool: ...
    @property
    def authenticated(self) -> bool: ...
    @property
    def admin(self) -> bool: ...


class KvCloud:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def handle(self, caller: Caller, args: list[bytes]) -> bytes | Awaitable[bytes]:
        if not args:
            return error("ERR wrong number of arguments for 'kvcloud' command; try KVCLOUD HELP")
        sub = args[0].decode(errors="replace").upper()
        if sub != "HELP":
            refusal = self._refusal(caller)
            if refusal is not None:
                return refusal
        handler = getattr(self, f"_{sub.lower()}", None) if sub in HELP else None
        if handler is None:
            return error(
                f"ERR unknown KVCLOUD subcommand '{sub}'; valid subcommands: {', '.join(HELP)}"
            )
        value = handler(args[1:])
        if inspect.isawaitable(value):
            return self._encoded_later(value, caller.resp3)
        if isinstance(value, bytes) and value.startswith(b"-"):
            return value
        return encode(value, caller.resp3)

    async def _encoded_later(self, value: Awaitable[Value], resp3: bool) -> bytes:
        result = await value
        if isinstance(result, bytes) and result.startswith(b"-"):
            return result
        return encode(result, resp3)

    @staticmethod
    def answers_later(args: list[bytes]) -> bool:
        """Whether the reply needs I/O first (the session then reads nothing more until it)."""
        if not args:
            return False
        sub = args[0].upper()
        return sub in LATER or any(arg.upper() in (b"WAIT", b"KEEP") for arg in args[1:])

    def _refusal(self, caller: Caller) -> bytes | None:
        if self.proxy.upstream_requires_auth:
            return error("ERR KVCLOUD needs upstream_password in kvcloud.conf: "
                         "the server requires a password")
        if not caller.authenticated:
            return b"-NOAUTH Authentication required.\r\n"
        if not caller.admin:
            return error("NOPERM KVCLOUD needs the upstream_password of kvcloud.conf (admin)")
        return None

    def _upload(self, args: list[bytes]) -> Value | Awaitable[Value]:
        words = [arg.decode(errors="replace") for arg in args]
        wait = any(word.upper() == "WAIT" for word in words)
        names = [word for word in words if word.upper() != "WAIT"]
        config = self.proxy.config
        if config["source"] == "directory":
            return error("ERR KVCLOUD UPLOAD takes a snapshot from the server: set source = "
                         "auto, kvrocks-local or redis (directory is for kvrocks-cloud -d)")
        try:
            providers = select_providers(config, names, "upload")
            job = self.proxy.jobs.start("upload", [p.name for p in providers],
                                        lambda status: self.proxy.backup(providers, status))
        except (TargetError, Busy) as exc:
            return error(f"ERR {exc}")
        return self._job_reply(job.job_id, wait)

    def _restore(self, args: list[bytes]) -> Value | Awaitable[Value]:
        words = [arg.decode(errors="replace") for arg in args]
        upper = [word.upper() for word in words]
        config = self.proxy.config
        if upper and upper[0] in ("KEEP", "REVERT", "RETAIN"):
            return self._after_swap(upper)
        wait = "WAIT" in upper
        words = [word for word in words if word.upper() != "WAIT"]
        upper = [word.upper() for word in words]
        usage = "[provider] [backup-id|LATEST] [TO dir|SWAP] [WAIT]"
        if "SWAP" in upper:
            words.pop(upper.index("SWAP"))
            try:
                check_can_swap(self.proxy, config)
            except SwapError as exc:
                return error(f"ERR {exc}")
            return self._read_job(
                "restore", words, wait, usage,
                lambda provider, wanted: lambda status: run_swap(
                    self.proxy, config, provider, wanted, status, open_store))
        target: Path | None = None
        if "TO" in upper:
            at = upper.index("TO")
            if at + 1 >= len(words):
                return error("ERR KVCLOUD RESTORE ... TO needs a directory")
            target = Path(words[at + 1])
            del words[at:at + 2]
        return self._read_job(
            "restore", words, wait, usage,
            lambda provider, wanted: lambda status: run_restore(
                config, provider, wanted, target, status, open_store))

    def _after_swap(self, words: list[str]) -> Value | Awaitable[Value]:
        """RESTORE KEEP | REVERT [WAIT] | RETAIN: what becomes of the database a swap set aside."""
        config = self.proxy.config
        action, rest = words[0], words[1:]
        if rest and rest != ["WAIT"] or (rest and action != "REVERT"):
            return error(f"ERR usage: KVCLOUD RESTORE {action}"
                         + (" [WAIT]" if action == "REVERT" else ""))
        try:
            pending_swap(config)
            if action == "RETAIN":
                return {"status": "retained", "previous": retain(config)}
            if action == "REVERT":
                job = self.proxy.jobs.start("revert", ["revert"],
                                            lambda status: run_revert(self.proxy, config, status))
                return self._job_reply(job.job_id, bool(rest))
        except (SwapError, Busy) as exc:
            return error(f"ERR {exc}")

        async def keeping() -> Value:
            try:
                return {"status": "kept", "result": await keep(config)}
            except (SwapError, OSError) as exc:
                return error(f"ERR {exc}")

        return keeping()

    def _verify(self, args: list[bytes]) -> Value | Awaitable[Value]:
        words = [arg.decode(errors="replace") for arg in args]
        wait = any(word.upper() == "WAIT" for word in words)
        every = any(word.upper() == "ALL" for word in words)
        words = [word for word in words if word.upper() not in ("WAIT", "ALL")]
        config = self.proxy.config
        return self._read_job(
            "verify", words, wait, "[provider] [backup-id|LATEST|ALL] [WAIT]",
            lambda provider, wanted: lambda status: run_verify(
                config, provider, wanted, every, status, open_store))

    def _prune(self, args: list[bytes]) -> Value | Awaitable[Value]:
        """Providers allowed to upload: prune deletes from the bucket, as only a writer may."""
        words = [arg.decode(errors="replace") for arg in args]
        wait = any(word.upper() == "WAIT" for word in words)
        dry_run = any(word.upper() == "DRYRUN" for word in words)
        names = [word for word in words if word.upper() not in ("WAIT", "DRYRUN")]
        config = self.proxy.config
        try:
            retention_policy(config)
            providers = select_providers(config, names, "upload")
            job = self.proxy.jobs.start("prune", [p.name for p in providers],
                                        lambda status: run_prune(config, providers, dry_run,
                                                                 status, open_store))
        except (PruneError, TargetError, Busy) as exc:
            return error(f"ERR {exc}")
        return self._job_reply(job.job_id, wait)

    def _read_job(self, operation: str, words: list[str], wait: bool, usage: str,
                  work: Callable[[Provider, str], Callable[[JobStatus], Awaitable[None]]],
                  ) -> Value | Awaitable[Value]:
        """RESTORE and VERIFY: ``[provider] [backup-id|LATEST]`` on one provider, as a job."""
        wanted = "LATEST"
        if words and (words[-1].upper() == "LATEST" or BACKUP_ID.match(words[-1])):
            wanted = words.pop()
        if len(words) > 1:
            return error(f"ERR usage: KVCLOUD {operation.upper()} {usage}")
        try:
            provider = select_providers(self.proxy.config, words, "restore")[0]
            job = self.proxy.jobs.start(operation, [provider.name], work(provider, wanted))
        except (TargetError, Busy) as exc:
            return error(f"ERR {exc}")
        return self._job_reply(job.job_id, wait)

    def _list(self, args: list[bytes]) -> Value | Awaitable[Value]:
        names = [arg.decode(errors="replace") for arg in args]
        config = self.proxy.config
        try:
            providers = select_providers(config, names, "restore")
        except TargetError as exc:
            return error(f"ERR {exc}")

        async def listing() -> Value:
            try:
                rows = await asyncio.to_thread(list_backups, config, providers, open_store)
            except CatalogError as exc:
                return error(f"ERR {exc}")
            return rows

        return listing()

    def _cancel(self, args: list[bytes]) -> Value | Awaitable[Value]:
        jobs = self.proxy.jobs
        if len(args) > 1:
            return error("ERR usage: KVCLOUD CANCEL [job-id]")
        running = jobs.running
        wanted = args[0].decode(errors="replace") if args else None
        if running is None or (wanted is not None and wanted != running.job_id):
            if wanted is not None and jobs.get(wanted) is None:
                return error(f"ERR no such job: {wanted}")
            return error(f"ERR job {wanted} is not running" if wanted else
                         "ERR no job is running")
        jobs.cancel(running.job_id)
        return self._job_reply(running.job_id, wait=True)

    def _job_reply(self, job_id: str, wait: bool) -> Value | Awaitable[Value]:
        """A job's id at once, or with WAIT its final STATUS when it ends."""
        if not wait:
            return job_id

        async def final_status() -> Value:
            return (await self.proxy.jobs.wait(job_id)).fields()

        return final_status()

    def _help(self, args: list[bytes]) -> Value:
        return [f"KVCLOUD {line}" for line in HELP.values()]

    def _status(self, args: list[bytes]) -> Value:
        jobs = self.proxy.jobs
        if args:
            job = jobs.get(args[0].decode(errors="replace"))
            if job is None:
                return error(f"ERR no such job: {args[0].decode(errors='replace')}; "
                             "KVCLOUD STATUS without an id shows the latest")
        else:
            job = jobs.latest()
        if job is None:
            idle: dict[str, Value] = {key: 0 if key in _NUMBERS else "" for key in STATUS_FIELDS}
            idle["state"] = "idle"
            return idle
        return job.fields()

    def _config(self, args: list[bytes]) -> Value:
        return dict(self.proxy.config.redacted())

    def _refresh(self, args: list[bytes]) -> Value:
        current = self.proxy.config
        if current.path is None:
            return error("ERR REFRESH needs a config file: start kvproxy with --conf FILE")
        try:
            fresh = configuration.load(current.path).with_overrides(**dict(current.overrides))
        except configuration.ConfigError as exc:
            log.warning("KVCLOUD REFRESH refused: %s", exc)
            return error(f"ERR config not reloaded, the old one stays: {exc}")
        needs_restart = [key for key in RESTART_KEYS if fresh[key] != current[key]]
        self.proxy.reconfigure(fresh.keeping(current, RESTART_KEYS))
        log.info("configuration reloaded from %s", current.path)
        return {
            "status": "reloaded",
            "file": str(current.path),
            "restart_required": ", ".join(needs_restart),
        }
