"""`kmsaudit demo`: the whole product on an embedded AWS emulator (moto), in a minute.

An organization of four accounts × three regions with about forty keys is seeded; kmsaudit
scans it, a key policy and a grant are changed, it scans again and shows the drift and the
alert a local webhook received. Nothing leaves the machine: moto listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kmsaudit.demo.emulator import client, create_key, create_role, key_policy, start_emulator

if TYPE_CHECKING:
    from kmsaudit.config.settings import Config
    from kmsaudit.model import Finding

PARTNER, NEWCOMER, VENDOR = "555566667777", "666677778888", "777788889999"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
USE = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]


class _Webhook:
    """A local receiver standing in for the security team's webhook."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/kmsaudit"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def seed() -> dict[str, Any]:
    """The demo organization; returns what the story needs (account ids, key ids)."""
    orgs = client("organizations", None)
    org_id = orgs.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    accounts = {
        name: orgs.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"]["AccountId"]
        for name in ("prod", "analytics", "shared")
    }
    accounts["management"] = orgs.describe_organization()["Organization"]["MasterAccountId"]
    prod, analytics, shared = accounts["prod"], accounts["analytics"], accounts["shared"]
    keys: dict[str, dict[str, str]] = {}
    created = [0]

    def key(name: str, account: str, region: str, policy: str | None = None) -> None:
        meta = create_key(account, region, policy, alias=f"alias/{name}", Description=name)
        keys[name] = {"id": meta["KeyId"], "arn": meta["Arn"], "account": account, "region": region}
        created[0] += 1

    # CloudWatch Logs encrypting the account's own log groups, confined as AWS documents it: an
    # AWS service acting for the key's own account is not cross-account access (SPEC §2.11).
    logs = {
        "Sid": "CloudWatch Logs, for this account's log groups",
        "Effect": "Allow",
        "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
        "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:SourceAccount": prod}},
    }
    for account in accounts.values():  # AWS-style default policies: the account's own IAM decides
        for region in REGIONS:
            for i in range(3):
                if (account, region, i) == (prod, "us-east-1", 0):
                    key("logs", account, region, key_policy(prod, logs))
                else:
                    key(f"app-{i}", account, region)
    key(
        "partner-shared",
        prod,
        "us-east-1",
        key_policy(
            prod,
            {
                "Sid": "Allow an external account to use this KMS key",
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{PARTNER}:root"]},
                "Action": USE,
                "Resource": "*",
            },
        ),
    )
    key(
        "analytics-reader",
        prod,
        "eu-west-1",
        key_policy(
            prod,
            {
                "Sid": "Only the Reader role of analytics",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{analytics}:role/Reader"},
                "Action": ["kms:Decrypt", "kms:DescribeKey"],
                "Resource": "*",
            },
        ),
    )
    key(
        "secrets-public",
        prod,
        "eu-west-1",
        key_policy(
            prod,
            {
                "Sid": "Anyone, through Secrets Manager",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}},
            },
        ),
    )
    key(
        "org-only",
        shared,
        "us-east-1",
        key_policy(
            shared,
            {
                "Sid": "Everyone",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["kms:Decrypt", "kms:Encrypt"],
                "Resource": "*",
            },
            {
                "Sid": "But only inside the organization",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["kms:Decrypt", "kms:Encrypt"],
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": org_id}},
            },
        ),
    )
    kms = client("kms", prod, "us-east-1")
    kms.create_grant(
        KeyId=keys["partner-shared"]["id"],
        GranteePrincipal=f"arn:aws:iam::{analytics}:role/Batch",
        Operations=["Decrypt", "GenerateDataKey"],
    )
    kms.create_grant(
        KeyId=keys["partner-shared"]["id"],
        GranteePrincipal=f"arn:aws:iam::{PARTNER}:role/Ingest",
        Operations=["Encrypt", "GenerateDataKey"],
        Constraints={"EncryptionContextSubset": {"tenant": "partner"}},
    )

    # What RDS leaves on a key that encrypts a database: a grant to the service, issued by the
    # key's own account (SPEC §2.8): a `service-grant` lint, never an external finding.
    kms.create_grant(
        KeyId=keys["logs"]["id"], GranteePrincipal="rds.us-east-1.amazonaws.com", Operations=["Decrypt", "Encrypt"]
    )

    iam = client("iam", analytics)
    create_role(
        iam,
        "Reader",
        {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": f"arn:aws:kms:*:{prod}:key/*"},
        policy_name="read-prod-keys",
    )
    create_role(iam, "DataSci", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}, policy_name="s3")
    create_role(iam, "Batch")
    create_role(iam, "Admin", {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}, policy_name="all-kms")
    return {"org_id": org_id, "accounts": accounts, "keys": keys, "created": created[0]}


def _config(workdir: Path, listen: str, accounts: dict[str, str]) -> Path:
    path = workdir / "kmsaudit.toml"
    named = {**{v: k for k, v in accounts.items()}, PARTNER: "partner", NEWCOMER: "newcomer", VENDOR: "vendor"}
    path.write_text(
        "[scan]\n"
        f"regions = {json.dumps(list(REGIONS))}\n"
        'interval = "1m"\n\n'
        "[organization]\n"
        'role_name = "KmsAuditReadOnly"\n\n'
        "[store]\n"
        f"path = {json.dumps(str(workdir / 'kmsaudit.db'))}\n\n"
        "[daemon]\n"
        f'listen = "{listen}"\n\n'
        "[acceptance]                      # known-good access, reviewed like code\n"
        'files = ["accepted.toml"]\n\n'
        "[[alerts]]\n"
        'name = "security-webhook"\n'
        'type = "webhook"\n'
        'url_env = "KMSAUDIT_DEMO_WEBHOOK"\n'
        'min_severity = "medium"\n\n'
        "[names]                           # shown beside the ids in the HTML report\n"
        + "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in sorted(named.items()))
    )
    return path


def _accept_ingest(config_path: Path, findings: Sequence[Finding], out: TextIO) -> Config:
    """Accept the partner's constrained Ingest grant as `kmsaudit accept … --write` would: the
    narrowest entry (that key, that role, those actions, conditional), owned, reasoned, expiring."""
    from kmsaudit.acceptance.entries import append, entry_for, to_toml
    from kmsaudit.config.settings import load_config

    ingest = next(f for f in findings if f.principal.endswith(":role/Ingest"))
    expires = datetime.now(UTC).date() + timedelta(days=180)
    reason, owner = "partner writes its tenant's data (grant constrained to it)", "team-data"
    entry = entry_for(
        ingest.to_dict(), entry_id="partner-ingest", reason=reason, owner=owner, expires=expires, ticket="SEC-142"
    )
    text = to_toml(entry)
    target = append(config_path, text)
    out.write(
        "== Accepting known access: the partner's Ingest role is meant to encrypt its tenant's data\n"
        f'$ kmsaudit accept {ingest.id} --id partner-ingest --reason "{reason}" --owner {owner} '
        f"--expires {expires.isoformat()} --ticket SEC-142 --write\n"
        f"appended to {target}:\n{text}\n"
    )
    return load_config(config_path)


def free_port(port: int) -> int:
    """`--serve`'s port, checked before the demo starts (a bind test, as `kmsaudit check` does:
    the daemon listens on it at the end); 0: a free port chosen now. UsageError if taken."""
    import socket

    from kmsaudit.errors import UsageError

    try:
        with socket.create_server(("127.0.0.1", port)) as sock:
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise UsageError(
            f"--serve: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}): choose another port "
            "with --port PORT, or --port 0 for any free one"
        ) from None


def run_demo(
    workdir: str | Path = "kmsaudit-demo", serve: bool = False, out: TextIO = sys.stdout, port: int = 9465
) -> int:
    try:
        import moto.server  # noqa: F401 — the embedded emulator is an extra
    except ImportError:
        from kmsaudit.errors import UsageError

        raise UsageError("the demo needs the embedded emulator: pip install 'kmsaudit[demo]'") from None
    from kmsaudit.config.settings import load_config
    from kmsaudit.delivery.alerts import build_sinks
    from kmsaudit.files import check_folder
    from kmsaudit.formats.render import key_label, scan_key_names, write_drift, write_findings
    from kmsaudit.logging import configure
    from kmsaudit.run.scan import scan_and_record

    if serve:  # before the demo, not after it (issue #25)
        port = free_port(port)
    workdir = Path(workdir).resolve()
    if not workdir.is_dir():  # the demo makes its own folder, in one that exists (issue #25)
        check_folder(workdir.parent, "--dir", str(workdir))
        workdir.mkdir()
    check_folder(workdir, "--dir")
    for stale in workdir.glob("kmsaudit.db*"):
        stale.unlink()
    configure(json_logs=False, level="error")
    server, endpoint = start_emulator()
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo",
        AWS_DEFAULT_REGION="us-east-1",
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    webhook = _Webhook()
    os.environ["KMSAUDIT_DEMO_WEBHOOK"] = webhook.url
    colour = out.isatty()
    try:
        out.write(f"kmsaudit demo: an embedded AWS (moto) on {endpoint}, nothing leaves this machine.\n")
        story = seed()
        accounts = story["accounts"]
        n_keys = story["created"]
        out.write(
            f"Seeded organization {story['org_id']}: accounts "
            + ", ".join(f"{name} {acct}" for name, acct in accounts.items())
            + f"; {len(REGIONS)} regions; {n_keys} keys.\n"
            f"Outside the organization: partner {PARTNER}.\n\n"
        )
        config_path = _config(workdir, f"127.0.0.1:{port}", accounts)
        config = load_config(config_path)
        sinks = build_sinks(config.alerts)
        out.write("== Scan 1: who outside each account can use each key\n")
        result = asyncio.run(scan_and_record(config, sinks)).result
        names = scan_key_names(result.scopes)  # the keys' aliases beside their ARNs, as `scan` shows them
        write_findings(result.findings, "table", out, colour=colour, names=names)
        out.write(
            f"({result.keys} keys in {len(result.scopes)} scopes, {result.requests} AWS requests, "
            f"{result.finished_at - result.started_at:.1f} s)\n"
        )
        for lint in result.lints:
            if lint.kind == "service-grant":
                out.write(f"Not cross-account (lint {lint.kind}): {lint.key_arn}: {lint.message}\n")
        out.write("\n")
        config = _accept_ingest(config_path, result.findings, out)

        keys = story["keys"]
        prod = accounts["prod"]
        out.write(
            f"== A change: key 'analytics-reader' now also trusts account {NEWCOMER}, and key "
            f"'partner-shared' gets a grant for {VENDOR}\n"
        )
        kms = client("kms", prod, "eu-west-1")
        reader = json.loads(kms.get_key_policy(KeyId=keys["analytics-reader"]["id"], PolicyName="default")["Policy"])
        reader["Statement"].append(
            {
                "Sid": "New partner",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{NEWCOMER}:root"},
                "Action": ["kms:Decrypt", "kms:DescribeKey"],
                "Resource": "*",
            }
        )
        kms.put_key_policy(KeyId=keys["analytics-reader"]["id"], PolicyName="default", Policy=json.dumps(reader))
        client("kms", prod, "us-east-1").create_grant(
            KeyId=keys["partner-shared"]["id"],
            GranteePrincipal=f"arn:aws:iam::{VENDOR}:role/Backup",
            Operations=["Decrypt"],
        )

        out.write("\n== Scan 2: what changed\n")
        second = asyncio.run(scan_and_record(config, sinks))
        events = second.events
        write_drift([e.to_dict() for e in events], "table", out)
        shared = story["keys"]["partner-shared"]["arn"]
        out.write(
            "\nKey 'partner-shared' now: the accepted access is still reported (marked, dimmed on a "
            "terminal) and never alerts; the new grant is not accepted, and alerts.\n"
        )
        shown = [f for f in second.result.findings if f.key_arn == shared]
        write_findings(shown, "table", out, colour=colour, names=scan_key_names(second.result.scopes))
        out.write(
            f"\n== Alerts: the local webhook received {len(webhook.received)} "
            f"(min_severity medium, idempotency key = event id):\n"
        )
        for alert in webhook.received:
            where = key_label(alert["key_arn"], names)
            out.write(f"  {alert['severity']:8} {alert['kind']:8} {alert['principal']} on {where}\n")
            out.write(f"           why: {alert.get('why')}; fix: {(alert.get('remediation') or {}).get('summary')}\n")
        cfg = f"--config {config_path}"
        newcomer = next(e.after["id"] for e in events if e.kind == "added" and NEWCOMER in (e.principal or ""))
        out.write("\n== Why the newcomer can decrypt, and the verified change that removes it:\n")
        out.write(f"$ kmsaudit explain {newcomer[:12]}\n")
        from kmsaudit.formats.explained import explain_stored

        explain_stored(config_path, newcomer, None, "table", out)
        out.write(
            f"\nThe snapshots are in {config.store.path}. Explore them:\n"
            f"  kmsaudit findings {cfg}\n"
            f"  kmsaudit explain {newcomer[:12]} {cfg}\n"
            f"  kmsaudit drift {cfg} --format json\n"
            f"  kmsaudit history {keys['analytics-reader']['arn']} {cfg}\n"
            "Try your own documents offline: kmsaudit evaluate --key-policy FILE (see README).\n"
        )
        from kmsaudit.formats.report import run_report

        out.write("\n" + run_report(config_path, workdir / "kmsaudit-report.html") + "\n")
        out.write(f"Open it in a browser: {(workdir / 'kmsaudit-report.html').as_uri()}\n")
        if serve:
            from kmsaudit.run.daemon import run_daemon

            out.write(f"\nServing /metrics, /healthz, /readyz on 127.0.0.1:{port} (Ctrl-C to stop).\n")
            out.flush()
            configure(json_logs=False, level="info")
            run_daemon(config_path)
        return 0
    finally:
        webhook.server.shutdown()
        server.stop()
