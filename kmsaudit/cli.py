"""The command line (SPEC §6): one clear line and exit 2 for user mistakes, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kmsaudit import __version__
from kmsaudit.errors import KmsAuditError
from kmsaudit.model import SEVERITIES, Finding, severity_rank
from kmsaudit.render import FORMATS, write_findings, write_lints

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_FINDINGS, EXIT_SCOPES_FAILED = 0, 1, 2, 3, 4


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
    ev.add_argument("--format", choices=FORMATS, default="table")
    ev.add_argument("--lints", action="store_true", help="print the lints instead of the findings")
    ev.add_argument(
        "--fail-on", choices=SEVERITIES, metavar="SEVERITY", help="exit 3 if a finding is at or above SEVERITY"
    )
    return parser


def _fail_on(findings: Sequence[Finding], threshold: str | None) -> bool:
    return threshold is not None and any(severity_rank(f.severity) >= severity_rank(threshold) for f in findings)


def _evaluate(args: argparse.Namespace) -> int:
    from kmsaudit.offline import evaluate_files

    evaluation, note = evaluate_files(args.key_policy, args.key_arn, args.grants, args.iam, args.org, args.trust)
    if note:
        print(note, file=sys.stderr)
    if args.lints:
        write_lints(evaluation.lints, args.format, sys.stdout)
        return EXIT_OK
    write_findings(evaluation.findings, args.format, sys.stdout, colour=sys.stdout.isatty())
    if args.format == "table" and evaluation.lints:
        print(f"{len(evaluation.lints)} lints (see them with --lints):")
        write_lints(evaluation.lints, "table", sys.stdout)
    return EXIT_FINDINGS if _fail_on(evaluation.findings, args.fail_on) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            return _evaluate(args)
    except KmsAuditError as exc:
        print(f"kmsaudit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kmsaudit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    return EXIT_USAGE


def run() -> None:
    sys.exit(main())
