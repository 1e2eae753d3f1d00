"""The command line's arguments (SPEC §6): every command, its options and their checks."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date

from kmsaudit import __version__
from kmsaudit.config.settings import DEFAULT_CONFIG_PATH
from kmsaudit.formats.render import FINDING_FORMATS, FORMATS
from kmsaudit.model import SEVERITIES

EXIT_USAGE = 2  # as kmsaudit/cli/main.py: usage or config error


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"kmsaudit: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kmsaudit", description="Who outside each AWS account can use each KMS key.")
    parser.add_argument("--version", action="version", version=f"kmsaudit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ev = sub.add_parser(
        "evaluate",
        help="evaluate documents from files, no AWS calls",
        description="Evaluate a key policy (and optionally grants and the IAM "
        "details of accounts) offline, as a scan would.",
    )
    ev.add_argument(
        "--key-policy",
        required=True,
        metavar="FILE",
        help="key policy JSON (or the output of `aws kms get-key-policy`)",
    )
    ev.add_argument("--key-arn", metavar="ARN", help="the key's ARN (default: guessed from the policy)")
    ev.add_argument("--grants", metavar="FILE", help="output of `aws kms list-grants`")
    ev.add_argument(
        "--iam",
        action="append",
        default=[],
        metavar="ACCOUNT=FILE",
        help="output of `aws iam get-account-authorization-details` for ACCOUNT "
        "(the account then counts as audited); repeatable",
    )
    ev.add_argument("--org", metavar="FILE", help="output of `aws organizations list-accounts`")
    ev.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="ACCOUNT",
        help="an account inside the zone of trust; repeatable",
    )
    ev.add_argument(
        "--format",
        choices=(*FINDING_FORMATS, "sarif"),
        default="table",
        help="sarif: SARIF 2.1.0 for code scanning, each result at its statement's line",
    )
    ev.add_argument("--lints", action="store_true", help="print the lints instead of the findings")
    ev.add_argument(
        "--explain",
        action="store_true",
        help="with each finding, why it exists and the verified smallest changes that remove it",
    )
    ev.add_argument(
        "--fail-on", choices=SEVERITIES, metavar="SEVERITY", help="exit 3 if a finding is at or above SEVERITY"
    )
    sc = sub.add_parser(
        "scan",
        help="one scan: collect, evaluate, report (for cron)",
        description="Collect every key of every configured account and region, evaluate "
        "who outside each account can use it, and print the findings.",
    )
    _config_option(sc)
    sc.add_argument("--format", choices=FINDING_FORMATS, default="table")
    sc.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        metavar="SEVERITY",
        help="exit 3 if a finding is at or above SEVERITY (critical, high, medium, low)",
    )
    sc.add_argument(
        "--log-format",
        choices=("json", "console"),
        help="log lines on stderr (default: console on a terminal, json otherwise)",
    )
    sc.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")
    sc.add_argument(
        "--metrics-textfile",
        metavar="PATH",
        help="write the scan's metrics to PATH atomically (node_exporter's textfile collector)",
    )
    sc.add_argument(
        "--metrics-textfile-mode",
        type=_octal_mode,
        default=0o644,
        metavar="MODE",
        help="file mode of the textfile, octal (default 0644: node_exporter reads it as another user)",
    )
    sc.add_argument("--pushgateway", metavar="URL", help="push the scan's metrics to a Prometheus Pushgateway")
    da = sub.add_parser("daemon", help="scan on a schedule until SIGTERM; serve /metrics, /healthz, /readyz")
    _config_option(da)
    da.add_argument("--log-format", choices=("json", "console"), default="json")
    de = sub.add_parser("demo", help="the whole product on an embedded AWS emulator, in a minute")
    de.add_argument("--dir", default="kmsaudit-demo", help="where the demo's config and database go")
    de.add_argument("--serve", action="store_true", help="then keep the daemon running with /metrics")
    de.add_argument(
        "--port",
        type=_port,
        metavar="PORT",
        help="with --serve: the port of /metrics on 127.0.0.1 (default 9465; 0: any free port, printed)",
    )
    fi = sub.add_parser("findings", help="findings of the latest (or a given) snapshot")
    _config_option(fi)
    fi.add_argument("--format", choices=FINDING_FORMATS, default="table")
    fi.add_argument("--snapshot", type=int, metavar="ID")
    shown = fi.add_mutually_exclusive_group()
    shown.add_argument("--accepted", action="store_true", help="only the findings an acceptance entry covers")
    shown.add_argument("--unaccepted", action="store_true", help="only the findings no acceptance entry covers")
    dr = sub.add_parser("drift", help="drift events (README: Snapshots, drift and alerts)")
    _config_option(dr)
    dr.add_argument("--format", choices=FINDING_FORMATS, default="table")
    dr.add_argument("--since", metavar="WHEN", help="a duration back from now (24h, 7d) or an ISO date-time")
    hi = sub.add_parser("history", help="a key's policy versions, with a unified diff between them")
    _config_option(hi)
    hi.add_argument("key_arn", metavar="KEY", help="the key's ARN, its id, or one of its aliases (alias/name)")
    ck = sub.add_parser(
        "check",
        help="pre-flight: credentials, identity and read permissions per account, store, sinks, listen address",
        description="Check a deployment before its first scan; every failure comes with its fix. "
        "Exit 0 when all checks pass, 4 otherwise.",
    )
    _config_option(ck)
    ac = sub.add_parser(
        "accept",
        help="an acceptance entry for a finding (README: Accepting known access)",
        description="Print the narrowest [[accept]] entry for a finding of the latest snapshot "
        "(that key, that principal, those actions); --write appends it to the first [acceptance] file.",
    )
    _config_option(ac)
    ac.add_argument("finding_id", metavar="FINDING_ID", help="the finding's id (kmsaudit findings --format json)")
    ac.add_argument("--reason", required=True, help="why this access is known and good")
    ac.add_argument("--owner", required=True, help="who answers for it")
    ac.add_argument(
        "--expires", required=True, type=_date, metavar="YYYY-MM-DD", help="when it must be looked at again"
    )
    ac.add_argument("--ticket", help="a ticket or change reference")
    ac.add_argument("--id", dest="entry_id", help="the entry's id (default: accept-<finding id>)")
    ac.add_argument("--write", action="store_true", help="append it to the acceptance file (atomically)")
    rp = sub.add_parser(
        "report",
        help="one self-contained HTML report of a snapshot (README: Integrations)",
        description="Write the latest (or a given) snapshot as one HTML file with no outside resources: "
        "counts, an account x region matrix with a legend, 30 days of drift (before -> after), the accepted "
        "access with owner, reason, expiry and ticket, the findings with filters; account names from [names].",
    )
    _config_option(rp)
    rp.add_argument("--html", required=True, metavar="FILE", help="where to write the report")
    rp.add_argument("--snapshot", type=int, metavar="ID")
    ex = sub.add_parser(
        "explain",
        help="why a stored finding exists, and the verified smallest changes that remove it",
        description="Decide a stored finding again from the documents kept with its snapshot (no AWS calls): "
        "every statement, policy and grant it rests on, and each change that removes it, verified by "
        "evaluating the changed documents again.",
    )
    _config_option(ex)
    ex.add_argument("finding_id", metavar="FINDING_ID", help="the finding's id, or its first 8+ characters")
    ex.add_argument("--snapshot", type=int, metavar="ID", help="a stored snapshot (default: the latest)")
    ex.add_argument("--format", choices=("table", "json"), default="table")
    sn = sub.add_parser("snapshots", help="the stored snapshots: ids, dates, keys, findings, failed scopes")
    _config_option(sn)
    sn.add_argument("--format", choices=FORMATS, default="table")
    return parser


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2027-06-30") from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


def _octal_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal file mode such as 0644") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file mode (0000 to 0777)")
    return mode


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("KMSAUDIT_CONFIG", DEFAULT_CONFIG_PATH),
        help=f"TOML config (default: $KMSAUDIT_CONFIG or ./{DEFAULT_CONFIG_PATH})",
    )
