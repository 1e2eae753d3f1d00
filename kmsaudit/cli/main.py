"""The command line (SPEC §6): one clear line and exit 2 for user mistakes, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from kmsaudit.cli.arguments import build_parser
from kmsaudit.cli.terminal import Progress, Stdout
from kmsaudit.errors import KmsAuditError, UsageError
from kmsaudit.formats.render import plural, scan_key_names, write_drift, write_findings, write_lints
from kmsaudit.model import Finding, severity_rank

if TYPE_CHECKING:
    from kmsaudit.files import Destination
    from kmsaudit.metrics import Metrics
    from kmsaudit.store.database import Store

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_FINDINGS, EXIT_SCOPES_FAILED = 0, 1, 2, 3, 4


def _since(text: str | None) -> float | None:
    from datetime import datetime

    from kmsaudit.config.settings import parse_duration
    from kmsaudit.errors import UsageError

    if text is None:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected a duration (24h, 7d) or an ISO date-time") from None
    return moment.timestamp()


def _store(args: argparse.Namespace) -> Store:
    from kmsaudit.config.settings import load_config
    from kmsaudit.store.database import Store

    return Store(load_config(args.config).store.path, create=False)  # a read never makes a database


def _findings(args: argparse.Namespace) -> int:
    store = _store(args)
    findings = [Finding.from_dict(row) for row in store.findings(args.snapshot)]
    if args.accepted or args.unaccepted:
        findings = [f for f in findings if f.accepted == bool(args.accepted)]
    names = store.key_names(args.snapshot) if args.format in ("table", "ocsf", "ocsf-jsonl") else None
    snapshot = store.snapshot(args.snapshot)
    seen_at = snapshot["finished_at"] if snapshot else None
    write_findings(findings, args.format, sys.stdout, colour=sys.stdout.isatty(), names=names, seen_at=seen_at)
    return EXIT_OK


def _drift(args: argparse.Namespace) -> int:
    write_drift(_store(args).drift(_since(args.since)), args.format, sys.stdout)
    return EXIT_OK


def _history(args: argparse.Namespace) -> int:
    import difflib
    from datetime import UTC, datetime

    from kmsaudit.errors import UsageError
    from kmsaudit.evaluator.canonical import pretty_policy

    store = _store(args)
    arns = store.find_keys(args.key_arn) or [args.key_arn]
    if len(arns) > 1:
        raise UsageError(f"{args.key_arn} names {len(arns)} keys (one per account and region): {', '.join(arns)}")
    versions = store.history(arns[0])
    if not versions:
        raise UsageError(f"no policy recorded for {args.key_arn} (a key ARN, key id or alias of a scanned key)")
    previous: list[str] = []
    for version in versions:
        when = datetime.fromtimestamp(version["seen_at"], UTC).isoformat(timespec="seconds")
        print(f"== snapshot {version['snapshot_id']} at {when}: policy sha256 {version['sha256'][:16]}")
        lines = pretty_policy(version["text"] or None).splitlines()  # canonical: a reordering is no diff
        if previous:
            sys.stdout.writelines(
                line + "\n" for line in difflib.unified_diff(previous, lines, "before", "after", lineterm="")
            )
        else:
            print("\n".join(lines))
        previous = lines
    for change in store.acceptance_history(arns[0]):
        when = datetime.fromtimestamp(change["at"], UTC).isoformat(timespec="seconds")
        print(
            f"== snapshot {change['snapshot_id']} at {when}: {change['access']} access of {change['principal']} "
            f"{change['change']} ({'entry' if change['change'] != 'outgrown' else 'beyond entry'} {change['entry_id']})"
        )
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    import asyncio

    from kmsaudit.config.settings import load_config
    from kmsaudit.logging import configure
    from kmsaudit.run.check import run_checks, write_checks

    config = load_config(args.config)
    configure(json_logs=None, level="error")
    results = asyncio.run(run_checks(config))
    write_checks(results, sys.stdout)
    return EXIT_OK if all(r.ok for r in results) else EXIT_SCOPES_FAILED


def _accept(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kmsaudit.acceptance.entries import append, check_expires, entry_for, to_toml
    from kmsaudit.config.settings import load_config
    from kmsaudit.errors import UsageError

    config = load_config(args.config)
    found = [f for f in _store(args).findings() if f["id"] == args.finding_id]
    if not found:
        raise UsageError(f"no finding {args.finding_id} in the latest snapshot (kmsaudit findings --format json)")
    check_expires(args.expires, config.acceptance.max_days)
    entry = entry_for(
        found[0],
        entry_id=args.entry_id or f"accept-{args.finding_id[:12]}",
        reason=args.reason,
        owner=args.owner,
        expires=args.expires,
        ticket=args.ticket,
    )
    text = to_toml(entry)
    sys.stdout.write(text)
    if args.write:
        target = append(Path(args.config), text)
        print(f"kmsaudit: appended to {target}; the next scan applies it", file=sys.stderr)
    return EXIT_OK


def _snapshots(args: argparse.Namespace) -> int:
    from kmsaudit.formats.render import write_snapshots

    write_snapshots(_store(args).snapshots(), args.format, sys.stdout)
    return EXIT_OK


def _scan(args: argparse.Namespace) -> int:
    from kmsaudit.config.settings import load_config
    from kmsaudit.files import check_destination

    # The user's mistakes first, before the AWS SDK and the scan are imported (a second or more).
    config = load_config(args.config)
    textfile = check_destination(args.metrics_textfile, "--metrics-textfile") if args.metrics_textfile else None
    if args.pushgateway:
        _check_pushgateway(args.pushgateway)

    import asyncio

    from kmsaudit.delivery.alerts import build_sinks, is_accepted
    from kmsaudit.logging import configure
    from kmsaudit.metrics import Metrics
    from kmsaudit.run.scan import scan_and_record

    sinks = build_sinks(config.alerts)  # a missing secret is a config error, before any AWS call
    configure(
        json_logs=None if args.log_format is None else args.log_format == "json",
        level="warning" if sys.stderr.isatty() and args.log_format is None else "info",
    )
    metrics = Metrics()
    progress = Progress(sys.stderr.isatty() and not args.no_progress)
    try:
        recorded = asyncio.run(scan_and_record(config, sinks, metrics=metrics, progress=progress))
    finally:
        progress.close()
    result, events = recorded.result, recorded.events
    unexported = _export_metrics(metrics, textfile, args.metrics_textfile_mode, args.pushgateway)
    failed = len(result.failed_scopes)
    if failed == len(result.scopes):
        empty = f"No scope could be read: nothing was audited ({failed} failed; see below and `kmsaudit findings`)."
    elif failed:
        empty = f"No cross-account access found in the scopes read; {failed} failed (see below)."
    else:
        empty = "No cross-account access found."
    write_findings(
        result.findings,
        args.format,
        sys.stdout,
        colour=sys.stdout.isatty(),
        empty=empty,
        names=scan_key_names(result.scopes),
        seen_at=result.finished_at,
    )
    if args.format == "table" and events:
        print(f"\ndrift since the last complete scan ({plural(len(events), 'event')}):")
        write_drift([e.to_dict() for e in events], "table", sys.stdout)
    for scope in result.failed_scopes:
        print(f"kmsaudit: scope {scope.account}/{scope.region} failed: {scope.error}", file=sys.stderr)
    for scope in result.scopes:
        for arn, code in scope.unreadable:
            print(f"kmsaudit: key {arn} could not be read ({code}): its last known findings are kept", file=sys.stderr)
    for account, reason in sorted(result.iam_failures.items()):
        print(f"kmsaudit: IAM of {account} could not be read (no effective findings for it): {reason}", file=sys.stderr)
    if recorded.pending_alerts:
        print(
            f"kmsaudit: {recorded.pending_alerts} alerts or exported findings wait for their destination; "
            "they are retried at the next scan",
            file=sys.stderr,
        )
    if args.format == "table":
        ok = len(result.scopes) - failed
        print(
            f"{plural(result.keys, 'key')} in {ok}/{plural(len(result.scopes), 'scope')}, "
            f"{plural(result.requests, 'AWS request')} ({result.throttled} throttled), "
            f"{result.finished_at - result.started_at:.1f} s; snapshot {recorded.snapshot_id} in {config.store.path}"
        )
        if failed:
            print(
                f"{plural(failed, 'scope')} failed: their last known findings are kept and still reported "
                "(`kmsaudit findings`, the metrics); a failure is never read as access removed."
            )
    # Accepted access and its events never fail a run; failures exit 4, below.
    changes = [e.severity for e in events if e.kind != "scope-failed" and not is_accepted(e)]
    if _fail_on([f.severity for f in result.findings if not f.accepted] + changes, args.fail_on):
        return EXIT_FINDINGS
    if result.failed_scopes or result.iam_failures or unexported:
        return EXIT_SCOPES_FAILED  # the scan is stored, part of what it owes is missing
    return EXIT_OK


def _check_pushgateway(url: str) -> None:
    """Before the scan: a Pushgateway URL that cannot be one is a usage error (exit 2)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(f"--pushgateway {_without_credentials(url)}: not an http(s)://HOST[:PORT] URL")


def _export_metrics(metrics: Metrics, textfile: Destination | None, mode: int, pushgateway: str | None) -> int:
    """The scan's metrics to the textfile and the Pushgateway, after its snapshot is stored. A
    failure of either is one line on stderr and counts alike (exit 4: the scan is stored, its
    metrics are missing, as the shipped units and README say); returns how many failed."""
    from prometheus_client import push_to_gateway

    failed = 0
    if textfile is not None:
        try:
            metrics.write_textfile(textfile, mode)
        except KmsAuditError as exc:
            print(f"kmsaudit: error: metrics not exported: {exc}", file=sys.stderr)
            failed += 1
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job="kmsaudit", registry=metrics.registry, timeout=10)
        except (OSError, ValueError) as exc:
            reason = " ".join(str(getattr(exc, "reason", None) or exc).split())[:200]
            print(
                f"kmsaudit: error: metrics not exported: --pushgateway {_without_credentials(pushgateway)}: {reason}",
                file=sys.stderr,
            )
            failed += 1
    return failed


def _without_credentials(url: str) -> str:
    """scheme://host:port of a URL: a user name, password, path or query may be a secret."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    except ValueError:
        return "(the URL given)"


def _fail_on(severities: Iterable[str], threshold: str | None) -> bool:
    """`--fail-on`: something (a finding, a drift event) at or above the threshold."""
    return threshold is not None and any(severity_rank(s) >= severity_rank(threshold) for s in severities)


def _evaluate(args: argparse.Namespace) -> int:
    from kmsaudit.cli.offline import read_files
    from kmsaudit.evaluator import evaluate_keys

    key, scope, note = read_files(args.key_policy, args.key_arn, args.grants, args.iam, args.org, args.trust)
    evaluation = evaluate_keys([key], scope)
    if note:
        print(note, file=sys.stderr)
    explained = None
    if args.explain:
        if args.lints:
            raise UsageError("--explain explains findings; --lints lists lints: give one of them")
        from kmsaudit.evaluator.remedy import explain_and_remedy

        explained = explain_and_remedy(key, scope)
    if args.format == "sarif":
        from kmsaudit.formats.sarif import sarif_log

        findings = () if args.lints else evaluation.findings
        why = {f.id: (e, r) for f, e, r in explained} if explained is not None else None
        json.dump(sarif_log(findings, evaluation.lints, args.key_policy, args.grants, why), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_FINDINGS if _fail_on((f.severity for f in findings), args.fail_on) else EXIT_OK
    if args.lints:
        if args.format.startswith("ocsf"):
            raise UsageError("--lints has no OCSF form (lints are not access findings): use --format json")
        write_lints(evaluation.lints, args.format, sys.stdout)
        return EXIT_OK
    if explained is not None:
        from kmsaudit.cli.explain import write_evaluated

        write_evaluated(explained, args.format, key.policy)
    else:
        write_findings(evaluation.findings, args.format, sys.stdout, colour=sys.stdout.isatty())
    if args.format == "table" and evaluation.lints:
        lints = plural(len(evaluation.lints), "lint")
        print(f"\n{lints} (only these with --lints, or as JSON with --lints --format json):")
        write_lints(evaluation.lints, "table", sys.stdout)
    return EXIT_FINDINGS if _fail_on((f.severity for f in evaluation.findings), args.fail_on) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "scan":
            return _scan(args)
        if args.command == "daemon":
            from kmsaudit.logging import configure
            from kmsaudit.run.daemon import run_daemon

            configure(json_logs=args.log_format == "json", level="info")
            return run_daemon(args.config)
        if args.command == "demo":
            from kmsaudit.demo.tour import run_demo

            if args.port is not None and not args.serve:
                raise UsageError("--port is the port of --serve: give both (kmsaudit demo --serve --port PORT)")
            return run_demo(args.dir, serve=args.serve, port=9465 if args.port is None else args.port)
        if args.command == "findings":
            return _findings(args)
        if args.command == "drift":
            return _drift(args)
        if args.command == "history":
            return _history(args)
        if args.command == "snapshots":
            return _snapshots(args)
        if args.command == "check":
            return _check(args)
        if args.command == "accept":
            return _accept(args)
        if args.command == "explain":
            from kmsaudit.cli.explain import explain_command

            return explain_command(args)
        if args.command == "report":
            from kmsaudit.formats.report import run_report

            print(run_report(args.config, args.html, args.snapshot))
            return EXIT_OK
    except KmsAuditError as exc:
        print(f"kmsaudit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kmsaudit: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


def run() -> None:
    real = sys.stdout
    sys.stdout = Stdout(real)  # type: ignore[assignment,unused-ignore]
    try:
        code = main()
        sys.stdout.flush()
    finally:
        sys.stdout = real
    sys.exit(code)
