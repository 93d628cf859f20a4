"""``kvrocks-cloud``: backups without the proxy (cron jobs, a fresh host)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from kvproxy import __version__, logs
from kvproxy import config as configuration
from kvproxy.cloud_progress import watch
from kvproxy.config import Config, Provider
from kvproxy.jobs.backup import run_backup
from kvproxy.jobs.catalog import CatalogError, list_backups
from kvproxy.jobs.prune import PruneError, PruneReport, prune_provider, retention_policy
from kvproxy.jobs.registry import JobFailed
from kvproxy.jobs.restore import (
    RestoreError,
    open_for_reading,
    resolve_backup_id,
    restore_backup,
    start_command,
)
from kvproxy.jobs.status import FAILED, SUCCEEDED, JobStatus, new_job_id
from kvproxy.jobs.targets import TargetError, select_providers
from kvproxy.jobs.verify import verify_backup
from kvproxy.repo.errors import RepoError
from kvproxy.repo.keys import keygen
from kvproxy.repo.retention import Policy, RetentionError
from kvproxy.storage import StorageError, Store
from kvproxy.storage.providers import Credentials, open_store
from kvproxy.upstream.control import Control, ControlError
from kvproxy.upstream.snapshot import Snapshot, directory_snapshot, take_snapshot

log = logging.getLogger("kvrocks-cloud")

#: -p takes a provider type as the proposal names it, or a [provider NAME].
TYPES = {"s3": "s3", "gcs": "gcs", "az": "azure", "azure": "azure", "file": "file"}


class UsageError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="kvrocks-cloud",
        description="Back up Kvrocks (or Redis) to S3, GCS, Azure or a directory, without "
                    "the proxy. Settings come from --conf (kvcloud.conf) and the flags.")
    main.add_argument("--version", action="version", version=f"kvrocks-cloud {__version__}")
    commands = main.add_subparsers(dest="command", metavar="COMMAND")

    backup = commands.add_parser("backup", help="take or read a snapshot and upload it")
    backup.add_argument("--conf", metavar="FILE", help="kvcloud.conf with providers and keys")
    backup.add_argument("-p", "--provider", action="append", default=[], metavar="P",
                        help="s3, gcs, az or file (with -b), or a [provider NAME] of --conf; "
                             "repeat for several; default: every provider allowed to upload")
    backup.add_argument("-b", "--bucket-name", metavar="NAME",
                        help="bucket (s3, gcs), container (az) or directory (file)")
    source = backup.add_mutually_exclusive_group()
    source.add_argument("-d", "--backup-dir", metavar="PATH",
                        help="back up this checkpoint directory or RDB file as it is")
    source.add_argument("--upstream", metavar="HOST:PORT",
                        help="take a fresh BGSAVE on this server first (run on its host)")
    backup.add_argument("--prefix", help="where this server's backups live in the bucket")
    backup.add_argument("--endpoint-url", metavar="URL",
                        help="S3-compatible, GCS or Azure endpoint (MinIO, emulators)")
    backup.add_argument("--s3-key", metavar="AK:SK",
                        help="S3 access key and secret (warning: command lines leak)")
    backup.add_argument("--azure-key", metavar="ACCOUNT:KEY",
                        help="Azure account and key (warning: command lines leak)")
    backup.add_argument("-gsa", "--gcs-service-account", metavar="FILE",
                        help="GCS service-account JSON key file")
    backup.add_argument("-cf", "--cred-file", metavar="FILE",
                        help="credentials file (format: docs/configuration.md)")
    backup.add_argument("-scf", "--shared-cred-file", metavar="FILE",
                        help="provider's shared credentials file, e.g. ~/.aws/credentials")
    backup.add_argument("--profile", help="profile in the shared credentials file")
    backup.add_argument("-e", "--encrypt", action="store_true",
                        help="require encryption (the default when a key is given)")
    backup.add_argument("--no-encrypt", action="store_true",
                        help="store backups unencrypted (encryption = none)")
    backup.add_argument("--key-file", metavar="FILE", help="the backup key (see keygen)")
    backup.add_argument("-m", "--multipart", action="store_true",
                        help="accepted for compatibility: every object is already a chunk "
                             "of at most 16 MiB, uploaded in parallel")
    backup.add_argument("--parallelism", type=int, metavar="N", help="upload workers")
    backup.add_argument("--upstream-password", metavar="PW",
                        help="server password for --upstream (default: upstream_password)")
    backup.add_argument("--json", action="store_true", help="print the final status as JSON")

    key = commands.add_parser("keygen", help="write a new random 32-byte backup key (0600)")
    key.add_argument("file", help="where to write it; an existing file is never overwritten")

    listing = commands.add_parser("list", help="the backups of the providers, newest first")
    listing.add_argument("--conf", metavar="FILE", required=True,
                         help="kvcloud.conf with the providers and the key")
    listing.add_argument("-p", "--provider", action="append", default=[], metavar="NAME",
                         help="a [provider NAME] or shorthand; default: every provider "
                              "allowed to restore")
    listing.add_argument("--key-file", metavar="FILE", help="the backup key")
    listing.add_argument("--json", action="store_true", help="print JSON")

    restore = _one_backup_parser(commands, "restore", "restore a backup into a new directory")
    restore.add_argument("--to", metavar="DIR", required=True,
                         help="a directory that does not exist yet (or is empty)")
    restore.add_argument("--parallelism", type=int, metavar="N", help="download workers")

    verify = _one_backup_parser(commands, "verify", "read back and check every object")
    verify.add_argument("--all", action="store_true", help="every backup of the provider")

    prune = commands.add_parser(
        "prune", help="apply the retention policy, then delete chunks no backup needs")
    prune.add_argument("--conf", metavar="FILE", required=True,
                       help="kvcloud.conf with the providers, the key and retention")
    prune.add_argument("-p", "--provider", action="append", default=[], metavar="NAME",
                       help="a [provider NAME] or shorthand; default: every provider "
                            "allowed to upload")
    prune.add_argument("--dry-run", action="store_true",
                       help="say what would be deleted, delete nothing")
    prune.add_argument("--retention", metavar="POLICY",
                       help="instead of retention in --conf, e.g. 'last=7 daily=7 weekly=4'")
    prune.add_argument("--key-file", metavar="FILE", help="the backup key")
    prune.add_argument("--parallelism", type=int, metavar="N", help="concurrent deletes")
    prune.add_argument("--json", action="store_true", help="print the reports as JSON")
    return main


def _one_backup_parser(commands: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """restore and verify: one provider of --conf, one backup (or LATEST)."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=summary)
    parser.add_argument("--conf", metavar="FILE", required=True,
                        help="kvcloud.conf with the providers and the key")
    parser.add_argument("-p", "--provider", metavar="NAME",
                        help="default: the first provider allowed to restore")
    parser.add_argument("backup_id", nargs="?", default="LATEST",
                        help="a backup id from 'list', or LATEST (default)")
    parser.add_argument("--key-file", metavar="FILE", help="the backup key")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup("text", "info")
    if args.command is None:
        parser().print_help()
        return 2
    try:
        if args.command == "keygen":
            keygen(args.file)
            print(f"wrote a new backup key to {args.file} (mode 0600): keep a copy somewhere "
                  "safe, without it no backup made with it can be restored")
            return 0
        if args.command == "backup":
            return backup(args)
        if args.command == "list":
            return list_command(args)
        if args.command == "restore":
            return restore_command(args)
        if args.command == "verify":
            return verify_command(args)
        if args.command == "prune":
            return prune_command(args)
    except (UsageError, configuration.ConfigError, RepoError, TargetError, CatalogError,
            PruneError) as exc:
        print(f"kvrocks-cloud: {exc}", file=sys.stderr)
        return 2
    print(f"kvrocks-cloud: {args.command} is not available in this version", file=sys.stderr)
    return 2


def backup(args: argparse.Namespace) -> int:
    config = _config(args)
    providers = _providers(args, config)
    credentials = _credentials(args)
    if args.multipart:
        log.info("-m: every object is a chunk of at most 16 MiB uploaded in one request; "
                 "chunks go up in parallel, so multipart uploads would add nothing")
    status = JobStatus(new_job_id("backup"), "upload", [p.name for p in providers])

    def opener(provider: Provider, prefix: str) -> Store:
        return open_store(provider, prefix, credentials)

    async def take(staging: Path) -> Snapshot:
        if args.backup_dir:
            return directory_snapshot(Path(args.backup_dir))
        password = args.upstream_password or config["upstream_password"]
        async with Control(config["upstream"], password) as control:
            return await take_snapshot(control, config["source"], staging)

    async def run() -> None:
        await watch(status, run_backup(config, providers, status, take, opener),
                    sys.stdout.isatty() and not args.json)

    try:
        asyncio.run(run())
        status.finish(SUCCEEDED)
    except (JobFailed, ControlError) as exc:
        status.finish(FAILED, str(exc))
    except KeyboardInterrupt:
        status.finish(FAILED, "interrupted")
    _report(status, args.json)
    return 0 if status.state == SUCCEEDED else 1


def restore_command(args: argparse.Namespace) -> int:
    config = configuration.load(args.conf).with_overrides(
        encryption_key_file=args.key_file, parallelism=args.parallelism)
    provider = select_providers(config, [args.provider] if args.provider else [], "restore")[0]
    status = JobStatus(new_job_id("restore"), "restore", [provider.name])
    target = Path(args.to)
    try:
        repo = open_for_reading(config, provider, _plain_opener)
        backup_id = resolve_backup_id(repo, args.backup_id, provider.name)
        status.backup_id = backup_id
        manifest = restore_backup(repo, backup_id, target, int(config["parallelism"]), status,
                                  threading.Event())
    except (RestoreError, RepoError, StorageError) as exc:
        status.finish(FAILED, str(exc))
        _report(status, args.json)
        return 1
    status.finish(SUCCEEDED)
    command = start_command(manifest, target.resolve())
    if args.json:
        print(json.dumps({**status.fields(), "directory": str(target.resolve()),
                          "start_command": command}, indent=2))
    else:
        print(f"restored {backup_id} into {target.resolve()}; start the server on it with:\n"
              f"  {command}")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    config = configuration.load(args.conf).with_overrides(encryption_key_file=args.key_file)
    provider = select_providers(config, [args.provider] if args.provider else [], "restore")[0]
    status = JobStatus(new_job_id("verify"), "verify", [provider.name])
    try:
        repo = open_for_reading(config, provider, _plain_opener)
        ids = (repo.list_backups() if args.all
               else [resolve_backup_id(repo, args.backup_id, provider.name)])
        report = {backup_id: verify_backup(repo, backup_id, int(config["parallelism"]),
                                           status, threading.Event()) for backup_id in ids}
    except (RestoreError, RepoError, StorageError) as exc:
        print(f"kvrocks-cloud: verify failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"provider": provider.name, "backups": report}, indent=2))
    else:
        for backup_id, problems in report.items():
            print(f"{backup_id}: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
            for problem in problems:
                print(f"  {problem}")
    return 0 if not any(report.values()) else 1


def prune_command(args: argparse.Namespace) -> int:
    if args.retention is not None:
        try:
            Policy.parse(args.retention)
        except RetentionError as exc:
            raise UsageError(f"--retention: {exc}") from None
    config = configuration.load(args.conf).with_overrides(
        encryption_key_file=args.key_file, parallelism=args.parallelism,
        retention=args.retention)
    policy = retention_policy(config)
    providers = select_providers(config, list(args.provider), "upload")
    reports, failed = [], False
    for provider in providers:
        status = JobStatus(new_job_id("prune"), "prune", [provider.name])
        try:
            report = prune_provider(config, provider, policy, args.dry_run, status,
                                    threading.Event(), lambda p, prefix: open_store(p, prefix))
        except (PruneError, RepoError, StorageError) as exc:
            print(f"kvrocks-cloud: prune of provider {provider.name} failed: {exc}",
                  file=sys.stderr)
            failed = True
            continue
        reports.append(report)
        if not args.json:
            _print_prune(report)
    if args.json:
        print(json.dumps([report.to_json() for report in reports], indent=2))
    return 1 if failed else 0


def _print_prune(report: PruneReport) -> None:
    print(f"provider {report.provider} (retention {report.policy})"
          + (": dry run, nothing is deleted" if report.dry_run else ""))
    for kept in report.kept:
        print(f"  {'keep':<12}  {kept['backup_id']}  {kept['created']}  "
              f"{', '.join(kept['reasons'])}")
    verb = "would delete" if report.dry_run else "deleted"
    for gone in report.deleted:
        print(f"  {verb:<12}  {gone['backup_id']}  {gone['created']}")
    for key in report.stale_locks_removed:
        print(f"  {'stale lock':<12}  {key} {'would be ' if report.dry_run else ''}removed")
    print(f"  {report.summary()}")


def list_command(args: argparse.Namespace) -> int:
    config = configuration.load(args.conf).with_overrides(encryption_key_file=args.key_file)
    providers = select_providers(config, list(args.provider), "restore")
    rows = list_backups(config, providers, _plain_opener)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("provider", "backup_id", "created", "source", "server_version", "bytes",
               "stored_bytes", "chunks", "encrypted")
    widths = {c: max([len(c), *(len(str(row[c])) for row in rows)]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
    return 0


def _plain_opener(provider: Provider, prefix: str) -> Store:
    """list, restore, verify: credentials from kvcloud.conf and the environment only."""
    return open_store(provider, prefix)


def _config(args: argparse.Namespace) -> Config:
    loaded = configuration.load(args.conf) if args.conf else configuration.defaults()
    overrides: dict[str, Any] = {
        "prefix": args.prefix, "parallelism": args.parallelism,
        "encryption_key_file": args.key_file,
        "upstream": configuration.MAIN_KEYS["upstream"].parse(args.upstream)
        if args.upstream else None,
    }
    if args.encrypt and args.no_encrypt:
        raise UsageError("-e/--encrypt and --no-encrypt contradict each other")
    if args.no_encrypt:
        overrides["encryption"] = "none"
    elif args.encrypt and loaded["encryption"] == "none":
        overrides["encryption"] = "aes-256-gcm"
    if not args.backup_dir and not args.upstream and not args.conf:
        raise UsageError("say what to back up: -d PATH (a checkpoint or RDB on disk) or "
                         "--upstream HOST:PORT (a fresh BGSAVE)")
    return loaded.with_overrides(**overrides)


def _providers(args: argparse.Namespace, config: Config) -> list[Provider]:
    if args.bucket_name:
        if len(args.provider) != 1 or args.provider[0].lower() not in TYPES:
            raise UsageError("-b goes with one -p s3|gcs|az|file")
        kind = TYPES[args.provider[0].lower()]
        where = {"azure": "container", "file": "path"}.get(kind, "bucket")
        values: dict[str, Any] = {"type": kind, "actions": ("upload", "restore"),
                                  where: args.bucket_name}
        if args.endpoint_url:
            values["endpoint_url"] = args.endpoint_url
        if args.profile:
            values["profile"] = args.profile
        return [Provider(args.provider[0].lower(), values)]
    return select_providers(config, list(args.provider), "upload")


def _credentials(args: argparse.Namespace) -> Credentials:
    """Credential flags; open_store warns when a secret came from the command line."""
    return Credentials(s3_key=args.s3_key, azure_key=args.azure_key,
                       gcs_service_account=args.gcs_service_account,
                       credentials_file=args.cred_file, shared_file=args.shared_cred_file,
                       profile=args.profile)


def _report(status: JobStatus, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status.fields(), indent=2))
        return
    if status.state != SUCCEEDED:
        print(f"kvrocks-cloud: {status.operation} failed: {status.error}", file=sys.stderr)
        return
    if status.state == SUCCEEDED:
        print(f"backup {status.backup_id}: {status.files} files, {status.bytes_done} bytes read, "
              f"{status.bytes_uploaded} bytes uploaded, {status.bytes_deduplicated} bytes "
              f"already stored")



if __name__ == "__main__":
    raise SystemExit(main())
