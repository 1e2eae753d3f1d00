"""Differential fuzzer (issue #26): kmsaudit's evaluator against an independent IAM simulator.

    python bench/differential.py --n 100000 --seed 1 [--report out.json] [--max-reproducers 20]

Generates random cross-account cases — a key policy in account A; a role or user of account B
(tags, identity policies, sometimes a permissions boundary); sometimes B and/or A in an AWS
Organization, with its SCPs (B's side) and RCPs (A's side) — and for each (principal, action,
concrete request) asks both:

- `@cloud-copilot/iam-simulate` (npm, version pinned in bench/iamsim/package-lock.json,
  installed on first use by `npm ci` into the ignored bench/iamsim/node_modules) through
  bench/iamsim/bridge.mjs, one long-lived node process: `Allowed`, `ImplicitlyDenied` or
  `ExplicitlyDenied` for that exact request;
- kmsaudit (`evaluate_keys` with B audited and the principal's IAM details): its `effective`
  finding for that principal, if any — `allowed` (the action in `actions`, not in
  `conditional_actions`), `undecided` (in `conditional_actions`: it depends on conditions
  kmsaudit leaves open), `denied` (no finding or the action not in it).

kmsaudit decides at audit time, without the request, so `undecided` is never a disagreement; it
is counted per condition key, and separately where every key it left open is one known at audit
time for that case (then undecided is a finding in itself). A disagreement is kmsaudit deciding
`allowed` where the simulator does not say `Allowed`, or `denied` where it does. Each is shrunk
by a delta-minimizer (statements, condition blocks, condition values, tags, request keys…
dropped while it still disagrees the same way), classified by the condition keys and features
left, and printed as a JSON reproducer. Disagreements that a divergence listed in
bench/known_divergences.json explains (the simulator is wrong there, by AWS's documentation)
are counted apart. Exit status 1 when any other disagreement is found, 2 when the simulator
cannot be installed or run.

Generation is a seeded `random.Random`, not hypothesis: at 100,000 pairs hypothesis' engine
costs more than both evaluators together and its shrinker cannot call out to node in batches;
the same seed gives the same cases. The simulator does not derive request context from the
principal (its README: automatic population is "coming soon"), so this script builds the
context AWS would put in the request — `aws:PrincipalArn` (the role's ARN for a role session),
`aws:PrincipalAccount`, `kms:CallerAccount`, `aws:PrincipalType`, `aws:userid`,
`aws:username` (users only), `aws:PrincipalTag/…`, `aws:PrincipalOrgID` (members only),
`aws:ResourceAccount`, `aws:ResourceOrgID` (the key's account a member), then the request's
own `aws:SourceIp`, `kms:ViaService`, `kms:EncryptionContext:…` — following AWS's "AWS global
condition context keys" and "AWS KMS condition keys" pages.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kmsaudit.evaluator import AuditScope, clear_caches, evaluate_keys  # noqa: E402
from kmsaudit.model import IamPrincipal, KeyRecord, Organization, PolicyDocument  # noqa: E402

IAMSIM = ROOT / "bench" / "iamsim"
BRIDGE = IAMSIM / "bridge.mjs"
PACKAGE = IAMSIM / "node_modules" / "@cloud-copilot" / "iam-simulate" / "package.json"
KNOWN = ROOT / "bench" / "known_divergences.json"

A = "111111111111"  # the key's account
B = "222222222222"  # the caller's account (audited)
C = "333333333333"  # somebody else
ORG = "o-aaaaaaaaaa"  # the organization B and/or A may belong to
ORG2 = "o-bbbbbbbbbb"
REGION = "us-east-1"
KEY_ARN = f"arn:aws:kms:{REGION}:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY_ARN = f"arn:aws:kms:{REGION}:{A}:key/9999abcd-12ab-34cd-56ef-1234567890ab"
SESSION = "s1"
ROLE_ID = "AROAEXAMPLEROLEID0001"
USER_ID = "AIDAEXAMPLEUSERID0001"
VERSION = "2012-10-17"

# Actions asked about. ScheduleKeyDeletion is not usable across accounts (KMS guide, "Allowing
# users in other accounts to use a KMS key"): kmsaudit never reports it.
ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:ReEncryptFrom",
    "kms:DescribeKey",
    "kms:CreateGrant",
)
RARE_ACTIONS = ("kms:ScheduleKeyDeletion",)
CROSS_ACCOUNT = frozenset(a.lower() for a in ACTIONS)
ACTION_PATTERNS = (
    "kms:*",
    "*",
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:Encrypt*",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:Describe*",
    "kms:CreateGrant",
    "kms:decrypt",
    "kms:*Key*",
    "kms:?ecrypt",
    "kms:ScheduleKeyDeletion",
    "kms:Decrypt ",  # trailing whitespace: kept by the simulator, stripped by kmsaudit (issue #26, 5)
)
NAMES = ("App1", "App2", "alice")
TAGS = {"team": ("red", "blue"), "env": ("prod", "dev")}
IPS = ("203.0.113.5", "198.51.100.7")
VIA = ("s3.us-east-1.amazonaws.com", "ec2.us-east-1.amazonaws.com")

# Keys whose value for the principal is known when kmsaudit audits (always, or per case below).
ALWAYS_KNOWN = frozenset(
    {
        "aws:principalaccount",
        "kms:calleraccount",
        "aws:principalarn",
        "aws:principaltype",
        "aws:principalisawsservice",
        "aws:resourceaccount",
        "aws:username",  # a user's name; absent for a role (IAM User Guide, global condition keys)
        "aws:principalservicename",  # absent for an IAM user or role calling directly
    }
)


@dataclass
class Stats:
    pairs: int = 0
    decided: int = 0
    undecided: int = 0
    agree: int = 0
    sim_errors: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    undecided_keys: Counter[str] = field(default_factory=Counter)
    decidable_undecided: Counter[str] = field(default_factory=Counter)
    decidable_examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    unknown: Counter[str] = field(default_factory=Counter)
    known: Counter[str] = field(default_factory=Counter)
    reproducers: dict[str, dict[str, Any]] = field(default_factory=dict)
    known_examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    error_examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    ours_seconds: float = 0.0
    ours_decisions: int = 0
    theirs_seconds: float = 0.0
    theirs_decisions: int = 0


# ---------------------------------------------------------------------------- the simulator


class SimulatorUnavailable(RuntimeError):
    """node/npm missing, or the pinned package could not be installed."""


def pinned_version() -> str:
    lock = json.loads((IAMSIM / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/@cloud-copilot/iam-simulate"]["version"])


def ensure_simulator() -> str:
    """The pinned simulator installed (`npm ci` on first use); its version. Raises
    SimulatorUnavailable with the reason when it cannot be."""
    if shutil.which("node") is None:
        raise SimulatorUnavailable("node is not installed (the simulator is a node package)")
    want = pinned_version()
    if PACKAGE.exists() and json.loads(PACKAGE.read_text()).get("version") == want:
        return want
    npm = shutil.which("npm")
    if npm is None:
        raise SimulatorUnavailable(f"bench/iamsim/node_modules is absent and npm is not installed (need {want})")
    proc = subprocess.run(
        [npm, "ci", "--prefix", str(IAMSIM), "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or not PACKAGE.exists():
        raise SimulatorUnavailable(f"npm ci in bench/iamsim failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return want


class Simulator:
    """bench/iamsim/bridge.mjs, one process; requests go in batches (no pipe deadlock: a batch's
    answers fit in the pipe)."""

    BATCH = 200

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise SimulatorUnavailable("node is not installed")
        self.proc = subprocess.Popen(
            [node, str(BRIDGE)],
            cwd=IAMSIM,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1 << 16,
        )
        self.seconds = 0.0
        self.decisions = 0

    def ask(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for start in range(0, len(requests), self.BATCH):
            batch = requests[start : start + self.BATCH]
            self.proc.stdin.write("".join(json.dumps(r) + "\n" for r in batch))
            self.proc.stdin.flush()
            for _ in batch:
                line = self.proc.stdout.readline()
                if not line:
                    raise SimulatorUnavailable("the simulator bridge exited")
                out.append(json.loads(line))
        self.seconds += time.perf_counter() - t0
        self.decisions += len(requests)
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------- generation


def principal_arn(p: dict[str, Any]) -> str:
    return f"arn:aws:iam::{B}:{p['kind']}/{p['name']}"


def caller_arn(p: dict[str, Any]) -> str:
    """The ARN the request is signed as: a role calls as one of its sessions."""
    if p["kind"] == "role":
        return f"arn:aws:sts::{B}:assumed-role/{p['name']}/{SESSION}"
    return principal_arn(p)


class Gen:
    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def some(self, seq: tuple[Any, ...] | list[Any], lo: int = 1, hi: int = 2) -> list[Any]:
        return self.r.sample(list(seq), self.r.randint(lo, min(hi, len(seq))))

    def one_or_list(self, values: list[Any]) -> Any:
        return values[0] if len(values) == 1 and self.r.random() < 0.6 else values

    def principal(self) -> dict[str, Any]:
        kind = "role" if self.r.random() < 0.6 else "user"
        name = self.r.choice(NAMES)
        tags = {k: self.r.choice(v) for k, v in TAGS.items() if self.r.random() < 0.5}
        return {"kind": kind, "name": name, "tags": tags}

    def condition_value(self, key: str, p: dict[str, Any]) -> tuple[str, list[str]]:
        """An operator and values for `key`."""
        r = self.r
        me = principal_arn(p)
        k = key.lower()
        if k in ("aws:principalaccount", "kms:calleraccount", "aws:resourceaccount"):
            op = r.choice(("StringEquals", "StringNotEquals", "StringLike", "StringNotLike"))
            return op, self.some((B, C, A, "2222*", "*"))
        if k == "aws:principalarn":
            op = r.choice(("ArnLike", "ArnNotLike", "ArnEquals", "StringEquals", "StringLike", "StringNotLike"))
            values = (
                me,
                f"arn:aws:iam::{B}:role/*",
                f"arn:aws:iam::{B}:user/*",
                "arn:aws:iam::*:role/App*",
                f"arn:aws:sts::{B}:assumed-role/{p['name']}/*",
                f"arn:aws:iam::{C}:role/*",
                f"arn:aws:iam::{B}:user/${{aws:username}}",
                f"arn:aws:iam::{B}:*",
            )
            return op, self.some(values)
        if k in ("aws:principalorgid", "aws:resourceorgid"):
            op = r.choice(("StringEquals", "StringNotEquals", "StringLike", "StringNotLike"))
            return op, self.some((ORG, ORG2, "o-*"))
        if k.startswith("aws:principaltag/"):
            op = r.choice(("StringEquals", "StringNotEquals", "StringLike", "StringNotLike"))
            tag = k.split("/", 1)[1]
            return op, self.some((*TAGS.get(tag, ("x",)), "r*", "*", "${aws:PrincipalTag/env}"))
        if k == "aws:username":
            op = r.choice(("StringEquals", "StringNotEquals", "StringLike", "StringNotLike"))
            return op, self.some(("alice", "App1", "a*", "${aws:username}", "${aws:PrincipalTag/team}"))
        if k == "aws:userid":
            op = r.choice(("StringLike", "StringNotLike", "StringEquals"))
            return op, self.some(("AROA*", "AIDA*", f"*:{SESSION}", USER_ID, f"{ROLE_ID}:*"))
        if k == "aws:principaltype":
            op = r.choice(("StringEquals", "StringNotEquals"))
            return op, self.some(("AssumedRole", "User", "Account"))
        if k == "aws:principalservicename":
            op = r.choice(("StringEquals", "StringNotEquals", "StringLike"))
            return op, self.some(("s3.amazonaws.com", "*"))
        if k == "aws:sourceip":
            return r.choice(("IpAddress", "NotIpAddress")), self.some(("203.0.113.0/24", "10.0.0.0/8"))
        if k == "kms:viaservice":
            op = r.choice(("StringEquals", "StringNotEquals", "StringLike"))
            return op, self.some((*VIA, "s3.*.amazonaws.com"))
        if k.startswith("kms:encryptioncontext:"):
            op = r.choice(("StringEquals", "StringNotEquals", "StringLike"))
            return op, self.some(("x", "y", "*"))
        if k in ("aws:principalisawsservice", "aws:securetransport"):
            return "Bool", [r.choice(("true", "false"))]
        raise AssertionError(key)

    KEYS = (
        "aws:PrincipalAccount",
        "kms:CallerAccount",
        "aws:PrincipalArn",
        "aws:PrincipalOrgID",
        "aws:PrincipalTag/team",
        "aws:PrincipalTag/env",
        "aws:username",
        "aws:userid",
        "aws:PrincipalType",
        "aws:PrincipalServiceName",
        "aws:ResourceAccount",
        "aws:ResourceOrgID",
        "aws:SourceIp",
        "kms:ViaService",
        "kms:EncryptionContext:app",
        "aws:PrincipalIsAWSService",
    )

    def condition(self, p: dict[str, Any]) -> dict[str, dict[str, Any]]:
        r = self.r
        block: dict[str, dict[str, Any]] = {}
        for _ in range(r.choice((1, 1, 1, 2))):
            key = r.choice(self.KEYS)
            if r.random() < 0.1:
                op, values = "Null", [r.choice(("true", "false"))]
            else:
                op, values = self.condition_value(key, p)
                if op.startswith(("String", "Arn")):
                    if r.random() < 0.15:
                        op += "IfExists"
                    if r.random() < 0.2:
                        op = r.choice(("ForAnyValue:", "ForAllValues:")) + op
            block.setdefault(op, {})[key] = self.one_or_list(values)
        return block

    def key_principal(self, p: dict[str, Any]) -> Any:
        r = self.r
        me = principal_arn(p)
        choices: tuple[tuple[float, Any], ...] = (
            (3, "*"),
            (1, {"AWS": "*"}),
            (3, {"AWS": f"arn:aws:iam::{B}:root"}),
            (1, {"AWS": B}),
            (3, {"AWS": me}),
            (1, {"AWS": f"arn:aws:iam::{B}:role/Other"}),
            (1, {"AWS": f"arn:aws:iam::{C}:root"}),
            (1, {"AWS": [f"arn:aws:iam::{C}:root", me]}),
        )
        return r.choices([c for _, c in choices], weights=[w for w, _ in choices])[0]

    def actions(self, stmt: dict[str, Any]) -> None:
        key = "NotAction" if self.r.random() < 0.12 else "Action"
        stmt[key] = self.one_or_list(self.some(ACTION_PATTERNS, 1, 3))

    def key_statement(self, p: dict[str, Any]) -> dict[str, Any]:
        r = self.r
        allow = r.random() < 0.75
        stmt: dict[str, Any] = {"Effect": "Allow" if allow else "Deny"}
        who = self.key_principal(p)
        if r.random() < 0.12 and who not in ("*", {"AWS": "*"}):
            # NotPrincipal: AWS recommends it only with Deny; an Allow with it is public.
            stmt = {"Effect": "Deny"} if r.random() < 0.8 else stmt
            stmt["NotPrincipal"] = who
        else:
            stmt["Principal"] = who
        self.actions(stmt)
        stmt["Resource"] = "*"
        if r.random() < (0.5 if stmt["Effect"] == "Allow" else 0.8):
            stmt["Condition"] = self.condition(p)
        return stmt

    def identity_statement(self, p: dict[str, Any], allow_p: float = 0.8, broad: bool = False) -> dict[str, Any]:
        r = self.r
        stmt: dict[str, Any] = {"Effect": "Allow" if broad or r.random() < allow_p else "Deny"}
        if broad:  # most principals that matter have a plain grant of the key
            stmt["Action"] = r.choice(("kms:*", "*", "kms:Decrypt", ["kms:Decrypt", "kms:Encrypt*", "kms:DescribeKey"]))
            stmt["Resource"] = r.choice(("*", KEY_ARN, f"arn:aws:kms:*:{A}:key/*"))
            return stmt
        self.actions(stmt)
        stmt["Resource"] = self.one_or_list(
            self.some(("*", KEY_ARN, f"arn:aws:kms:*:{A}:key/*", OTHER_KEY_ARN, f"arn:aws:kms:{REGION}:{C}:key/*"))
        )
        if r.random() < 0.3:
            stmt["Condition"] = self.condition(p)
        return stmt

    def case(self) -> dict[str, Any]:
        r = self.r
        p = self.principal()
        key_stmts = [self.key_statement(p) for _ in range(r.randint(1, 4))]
        key_stmts.insert(
            0, {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{A}:root"}, "Action": "kms:*", "Resource": "*"}
        )
        identity = [
            {
                "Version": VERSION,
                "Statement": [self.identity_statement(p, broad=i == 0 and j == 0) for j in range(r.randint(1, 3))],
            }
            for i in range(r.randint(1, 2))
        ]
        boundary = None
        if r.random() < 0.25:
            boundary = {
                "Version": VERSION,
                "Statement": [self.identity_statement(p, 0.85, broad=j == 0) for j in range(r.randint(1, 2))],
            }
        b_member, a_member = r.random() < 0.5, r.random() < 0.4
        scps: list[list[dict[str, Any]]] = []
        if b_member and r.random() < 0.7:
            for _ in range(r.randint(1, 2)):
                level = [{"Version": VERSION, "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}]
                if r.random() < 0.15:
                    level = [{"Version": VERSION, "Statement": [self.scp_statement(p, allow=True)]}]
                if r.random() < 0.5:
                    level.append({"Version": VERSION, "Statement": [self.scp_statement(p, allow=False)]})
                scps.append(level)
        rcps: list[list[dict[str, Any]]] = []
        if a_member and r.random() < 0.7:
            stmt: dict[str, Any] = {"Effect": "Deny", "Principal": "*", "Resource": "*"}
            stmt["Action"] = self.one_or_list(self.some(("kms:*", "kms:Decrypt", "kms:Encrypt*", "kms:CreateGrant")))
            stmt["Condition"] = self.condition(p)
            rcps.append([{"Version": VERSION, "Statement": [stmt]}])
        return {
            "principal": p,
            "key_policy": {"Version": VERSION, "Statement": key_stmts},
            "identity": identity,
            "boundary": boundary,
            "b_member": b_member,
            "a_member": a_member,
            "scps": scps,
            "rcps": rcps,
        }

    def scp_statement(self, p: dict[str, Any], allow: bool) -> dict[str, Any]:
        stmt: dict[str, Any] = {"Effect": "Allow" if allow else "Deny"}
        if allow:
            stmt["Action"] = self.one_or_list(self.some(("kms:*", "kms:Decrypt", "kms:Encrypt*", "kms:Describe*")))
        else:
            self.actions(stmt)
        stmt["Resource"] = "*"
        if not allow and self.r.random() < 0.7:
            stmt["Condition"] = self.condition(p)
        return stmt

    def request(self) -> dict[str, Any]:
        r = self.r
        action = r.choice(RARE_ACTIONS) if r.random() < 0.03 else r.choice(ACTIONS)
        ctx: dict[str, str] = {"aws:SourceIp": r.choice(IPS)}
        if r.random() < 0.5:
            ctx["kms:ViaService"] = r.choice(VIA)
        if r.random() < 0.5:
            ctx["kms:EncryptionContext:app"] = r.choice(("x", "y"))
        return {"action": action, "context": ctx}


# ---------------------------------------------------------------------------- both sides


def request_context(case: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """What AWS puts in this request (AWS global condition context keys; AWS KMS condition keys)."""
    p = case["principal"]
    ctx: dict[str, Any] = {
        "aws:PrincipalArn": principal_arn(p),  # a role session's aws:PrincipalArn is the role's ARN
        "aws:PrincipalAccount": B,
        "kms:CallerAccount": B,
        "aws:PrincipalType": "AssumedRole" if p["kind"] == "role" else "User",
        "aws:userid": f"{ROLE_ID}:{SESSION}" if p["kind"] == "role" else USER_ID,
        "aws:PrincipalIsAWSService": "false",
        "aws:ResourceAccount": A,
        "aws:SecureTransport": "true",
    }
    if p["kind"] == "user":
        ctx["aws:username"] = p["name"]
    for k, v in p["tags"].items():
        ctx[f"aws:PrincipalTag/{k}"] = v
    if case["b_member"]:
        ctx["aws:PrincipalOrgID"] = ORG
    if case["a_member"]:
        ctx["aws:ResourceOrgID"] = ORG
    ctx.update(request["context"])
    return ctx


def simulator_request(case: dict[str, Any], request: dict[str, Any], rid: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "identity": case["identity"],
        "boundary": case["boundary"],
        "scps": case["scps"] if case["b_member"] else [],
        "rcps": case["rcps"] if case["a_member"] else [],
        "key_policy": case["key_policy"],
        "principal": caller_arn(case["principal"]),
        "action": request["action"],
        "resource": KEY_ARN,
        "resource_account": A,
        "context": request_context(case, request),
    }


_TAGS_FIELD = "tags" in IamPrincipal.__dataclass_fields__
FULL_ACCESS_RCP = {
    "Version": VERSION,
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}],
}


def kmsaudit_answers(case: dict[str, Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """kmsaudit's answer per action for the case's principal: (allowed|denied|undecided, the
    condition keys it left open)."""
    p = case["principal"]
    arn = principal_arn(p)
    extra: dict[str, Any] = {}
    if _TAGS_FIELD:  # IAM authorization details carry the principal's tags
        extra["tags"] = tuple(sorted(p["tags"].items()))
    principal = IamPrincipal(
        arn=arn,
        account=B,
        kind=p["kind"],
        name=p["name"],
        policies=tuple(PolicyDocument(f"inline:p{i}", doc) for i, doc in enumerate(case["identity"])),
        boundary=PolicyDocument("arn:aws:iam::222222222222:policy/boundary", case["boundary"])
        if case["boundary"] is not None
        else None,
        **extra,
    )
    org = None
    members = {a for a, m in ((B, case["b_member"]), (A, case["a_member"])) if m}
    if members:
        scps = {B: tuple(tuple(level) for level in case["scps"])} if case["b_member"] and case["scps"] else {}
        rcps = {}
        if case["a_member"] and case["rcps"]:
            # AWS attaches RCPFullAWSAccess at every level and it cannot be detached.
            rcps = {A: tuple((FULL_ACCESS_RCP, *level) for level in case["rcps"])}
        org = Organization(org_id=ORG, accounts=frozenset(members), scps=scps, rcps=rcps)
    scope = AuditScope([principal], audited_accounts=[B], organization=org)
    key = KeyRecord(arn=KEY_ARN, account=A, region=REGION, key_id=KEY_ARN.rsplit("/", 1)[1], policy=case["key_policy"])
    evaluation = evaluate_keys([key], scope)
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for f in evaluation.findings:
        if f.principal != arn or f.access != "effective":
            continue
        keys = tuple(sorted({str(c["key"]).lower() for c in f.conditions if "key" in c}))
        for action in f.actions:
            undecided = action in f.conditional_actions or (f.conditional and not f.conditional_actions)
            out[action.lower()] = ("undecided", keys) if undecided else ("allowed", ())
    return out


def kms_answer(answers: dict[str, tuple[str, tuple[str, ...]]], action: str) -> tuple[str, tuple[str, ...]]:
    return answers.get(action.lower(), ("denied", ()))


def audit_time_keys(case: dict[str, Any]) -> frozenset[str]:
    known = set(ALWAYS_KNOWN)
    if case["b_member"]:
        known.add("aws:principalorgid")
    if case["a_member"]:
        known.add("aws:resourceorgid")
    if _TAGS_FIELD:
        known |= {f"aws:principaltag/{t}" for t in TAGS}
    return frozenset(known)


def disagrees(ours: str, theirs: dict[str, Any]) -> bool:
    if "error" in theirs or ours == "undecided":
        return False
    return bool((ours == "allowed") != (theirs["decision"] == "Allowed"))


# ---------------------------------------------------------------------------- minimizing


def _statement_lists(case: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    yield case["key_policy"]["Statement"]
    for doc in case["identity"]:
        yield doc["Statement"]
    if case["boundary"] is not None:
        yield case["boundary"]["Statement"]
    for level in (*case["scps"], *case["rcps"]):
        for doc in level:
            yield doc["Statement"]


Edit = Callable[[dict[str, Any], dict[str, Any]], bool]


def _setter(name: str, value: Any) -> Edit:
    def edit(c: dict[str, Any], q: dict[str, Any]) -> bool:
        c[name] = value
        return True

    return edit


def _popper(where: str, item: Any) -> Edit:
    def edit(c: dict[str, Any], q: dict[str, Any]) -> bool:
        target = {"identity": c["identity"], "tags": c["principal"]["tags"], "context": q["context"]}[where]
        target.pop(item)
        return True

    return edit


def _drop_documents(
    case: dict[str, Any], request: dict[str, Any], where: str
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Variants without one organization-policy document (a level keeps at least one), or with
    a boundary that allows everything (a boundary's last statement cannot be dropped alone)."""
    if where == "boundary_doc":
        everything = {"Version": VERSION, "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        if case["boundary"] is not None and case["boundary"] != everything:
            c = copy.deepcopy(case)
            c["boundary"] = everything
            yield c, copy.deepcopy(request)
        return
    for li, level in enumerate(case[where]):
        if len(case[where]) > 1:
            c = copy.deepcopy(case)
            del c[where][li]
            yield c, copy.deepcopy(request)
        for di in range(len(level)):
            if len(level) > 1:
                c = copy.deepcopy(case)
                del c[where][li][di]
                yield c, copy.deepcopy(request)


def _shrinks(case: dict[str, Any], request: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Smaller variants of (case, request), most reducing first."""

    def variant(edit: Edit) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        c, q = copy.deepcopy(case), copy.deepcopy(request)
        if edit(c, q):
            yield c, q

    for name in ("scps", "rcps"):
        if case[name]:
            yield from variant(_setter(name, []))
    if case["boundary"] is not None:
        yield from variant(_setter("boundary", None))
    for where in ("boundary_doc", "scps", "rcps"):
        yield from _drop_documents(case, request, where)
    n_lists = sum(1 for _ in _statement_lists(case))
    for li in range(n_lists):
        stmts = list(_statement_lists(case))[li]
        for si in range(len(stmts)):
            if len(stmts) > 1:

                def drop(c: dict[str, Any], q: dict[str, Any], li: int = li, si: int = si) -> bool:
                    del list(_statement_lists(c))[li][si]
                    return True

                yield from variant(drop)
    for li in range(n_lists):
        stmts = list(_statement_lists(case))[li]
        for si, stmt in enumerate(stmts):
            cond = stmt.get("Condition") or {}
            if cond:

                def nocond(c: dict[str, Any], q: dict[str, Any], li: int = li, si: int = si) -> bool:
                    del list(_statement_lists(c))[li][si]["Condition"]
                    return True

                yield from variant(nocond)
            for op, keys in cond.items():
                for key, values in keys.items():

                    def dropkey(
                        c: dict[str, Any], q: dict[str, Any], li: int = li, si: int = si, op: str = op, key: str = key
                    ) -> bool:
                        block = list(_statement_lists(c))[li][si]["Condition"]
                        del block[op][key]
                        if not block[op]:
                            del block[op]
                        if not block:
                            del list(_statement_lists(c))[li][si]["Condition"]
                        return True

                    if len(cond) > 1 or len(keys) > 1:
                        yield from variant(dropkey)
                    if isinstance(values, list):
                        for vi in range(len(values)):

                            def one(
                                c: dict[str, Any],
                                q: dict[str, Any],
                                li: int = li,
                                si: int = si,
                                op: str = op,
                                key: str = key,
                                vi: int = vi,
                            ) -> bool:
                                block = list(_statement_lists(c))[li][si]["Condition"]
                                block[op][key] = block[op][key][vi]
                                return True

                            yield from variant(one)
                    if op.startswith(("ForAnyValue:", "ForAllValues:")) or op.endswith("IfExists"):

                        def plain(
                            c: dict[str, Any],
                            q: dict[str, Any],
                            li: int = li,
                            si: int = si,
                            op: str = op,
                            key: str = key,
                        ) -> bool:
                            block = list(_statement_lists(c))[li][si]["Condition"]
                            bare = op.split(":", 1)[-1]
                            bare = bare[: -len("IfExists")] if bare.endswith("IfExists") else bare
                            if bare in block and key in block[bare]:
                                return False
                            block.setdefault(bare, {})[key] = block[op].pop(key)
                            if not block[op]:
                                del block[op]
                            return True

                        yield from variant(plain)
            for field_name in ("Action", "NotAction", "Resource", "Principal", "NotPrincipal"):
                value = stmt.get(field_name)
                if isinstance(value, list) and len(value) > 1:
                    for vi in range(len(value)):

                        def pick(
                            c: dict[str, Any],
                            q: dict[str, Any],
                            li: int = li,
                            si: int = si,
                            f: str = field_name,
                            vi: int = vi,
                        ) -> bool:
                            s = list(_statement_lists(c))[li][si]
                            s[f] = s[f][vi]
                            return True

                        yield from variant(pick)
                if isinstance(value, dict) and isinstance(value.get("AWS"), list) and len(value["AWS"]) > 1:
                    for vi in range(len(value["AWS"])):

                        def pick_aws(
                            c: dict[str, Any],
                            q: dict[str, Any],
                            li: int = li,
                            si: int = si,
                            f: str = field_name,
                            vi: int = vi,
                        ) -> bool:
                            s = list(_statement_lists(c))[li][si]
                            s[f] = {"AWS": s[f]["AWS"][vi]}
                            return True

                        yield from variant(pick_aws)
    if len(case["identity"]) > 1:
        for di in range(len(case["identity"])):
            yield from variant(_popper("identity", di))
    for tag in case["principal"]["tags"]:
        yield from variant(_popper("tags", tag))
    for flag in ("b_member", "a_member"):
        if case[flag]:
            yield from variant(_setter(flag, False))
    for k in request["context"]:
        yield from variant(_popper("context", k))


def minimize(
    case: dict[str, Any],
    request: dict[str, Any],
    still: Callable[[dict[str, Any], dict[str, Any]], bool],
    budget: int = 400,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Delta-minimizing: take the first smaller variant that still fails, until none does."""
    progress = True
    while progress and budget > 0:
        progress = False
        for c, q in _shrinks(case, request):
            budget -= 1
            if still(c, q):
                case, request, progress = c, q, True
                break
            if budget <= 0:
                break
    return case, request


# ---------------------------------------------------------------------------- classifying


def features(case: dict[str, Any]) -> list[str]:
    """The condition keys (with operators) and policy features a minimal case still uses."""
    out: set[str] = set()
    for stmts, where in (
        ([case["key_policy"]], "key policy"),
        (case["identity"], "identity"),
        ([case["boundary"]] if case["boundary"] else [], "boundary"),
        ([d for lvl in case["scps"] for d in lvl] if case["b_member"] else [], "scp"),
        ([d for lvl in case["rcps"] for d in lvl] if case["a_member"] else [], "rcp"),
    ):
        for doc in stmts:
            for s in doc["Statement"]:
                if where == "boundary":
                    out.add("permissions boundary")
                if where in ("scp", "rcp") and s["Effect"] == "Deny":
                    out.add(f"{where} Deny")
                if "NotPrincipal" in s:
                    out.add(f"NotPrincipal in {s['Effect']}")
                if "NotAction" in s:
                    out.add(f"NotAction in {where} {s['Effect']}")
                for op, keys in (s.get("Condition") or {}).items():
                    for key, values in keys.items():
                        variable = any("${" in str(v) for v in (values if isinstance(values, list) else [values]))
                        out.add(f"{s['Effect']} {op} {key}" + (" (policy variable)" if variable else ""))
    return sorted(out)


def classify(case: dict[str, Any], found: list[str]) -> str:
    """A minimal case's class: the feature that decides it where one is known to, else every
    condition key and feature left."""
    for stmts in _statement_lists(case):
        for stmt in stmts:
            for name in ("Action", "NotAction"):
                values = stmt.get(name, [])
                if any(v != v.strip() for v in ([values] if isinstance(values, str) else values)):
                    return f"{name} pattern with surrounding whitespace"
    if "NotPrincipal in Deny" in found and "permissions boundary" in found:
        return "Deny with NotPrincipal, the caller has a permissions boundary"
    return "; ".join(found) or "no conditions"


def load_known() -> list[dict[str, Any]]:
    return list(json.loads(KNOWN.read_text())["divergences"])


def _negated_empty_variable(case: dict[str, Any], request: dict[str, Any]) -> bool:
    """Does a negated operator test a key the request carries against a policy variable that has
    no value for the caller? (With the key absent too, the simulator applies the absent-key rule,
    negated operators true, and is right.)"""
    present = {k.lower() for k in request_context(case, request)}
    p = case["principal"]
    empty = {f"${{aws:principaltag/{t}}}" for t in TAGS if t not in p["tags"]}
    if p["kind"] != "user":
        empty.add("${aws:username}")
    for stmts in _statement_lists(case):
        for stmt in stmts:
            for op, keys in (stmt.get("Condition") or {}).items():
                if not op.split(":")[-1].lower().startswith(("stringnot", "arnnot")):
                    continue
                for key, values in keys.items():
                    if key.lower() not in present:
                        continue
                    for v in values if isinstance(values, list) else [values]:
                        if any(e in str(v).lower() for e in empty):
                            return True
    return False


def known_divergence(
    case: dict[str, Any], request: dict[str, Any], ours: str, theirs: dict[str, Any], known: list[dict[str, Any]]
) -> str | None:
    """The id of the documented simulator divergence that explains a minimal disagreement."""
    ids = {k["id"] for k in known}
    text = json.dumps(case).lower()
    ignored = [k.lower() for k in theirs.get("ignored", ())]
    if (
        "encryption-context-key-dropped" in ids
        and "kms:encryptioncontext:" in text
        and any(k.startswith("kms:encryptioncontext:") for k in ignored)
    ):
        return "encryption-context-key-dropped"
    if (
        "not-cross-account-action" in ids
        and request["action"].lower() not in CROSS_ACCOUNT
        and ours == "denied"
        and theirs.get("decision") == "Allowed"
    ):
        return "not-cross-account-action"
    if "policy-variable-no-value-negated" in ids and _negated_empty_variable(case, request):
        return "policy-variable-no-value-negated"
    if "notprincipal-without-account" in ids and ours == "denied" and theirs.get("decision") == "Allowed":
        me = principal_arn(case["principal"]).lower()
        for stmt in case["key_policy"]["Statement"]:
            named = stmt.get("NotPrincipal", {}).get("AWS", []) if stmt["Effect"] == "Deny" else []
            named = [n.lower() for n in ([named] if isinstance(named, str) else named)]
            if me in named and B not in named and f"arn:aws:iam::{B}:root" not in named:
                return "notprincipal-without-account"
    return None


# ---------------------------------------------------------------------------- the run


@dataclass
class Pair:
    case_no: int
    request: dict[str, Any]


def run(n: int, seed: int, *, max_reproducers: int = 20, out: Any = sys.stdout, progress: bool = True) -> Stats:
    rng = random.Random(seed)
    gen = Gen(rng)
    known = load_known()
    stats = Stats()
    sim = Simulator()
    per_case = 4
    try:
        case_no = 0
        while stats.pairs < n:
            # A chunk of cases: kmsaudit answers each once (it answers every action at once).
            cases: list[dict[str, Any]] = []
            answers: list[dict[str, tuple[str, tuple[str, ...]]]] = []
            pairs: list[Pair] = []
            while len(pairs) < min(1000, n - stats.pairs):
                case = gen.case()
                t0 = time.perf_counter()
                answers.append(kmsaudit_answers(case))
                stats.ours_seconds += time.perf_counter() - t0
                stats.ours_decisions += 1
                cases.append(case)
                for _ in range(per_case):
                    if len(pairs) < min(1000, n - stats.pairs):
                        pairs.append(Pair(len(cases) - 1, gen.request()))
                case_no += 1
                if case_no % 2000 == 0:
                    clear_caches()
            replies = sim.ask([simulator_request(cases[p.case_no], p.request, i) for i, p in enumerate(pairs)])
            for pair, theirs in zip(pairs, replies, strict=True):
                case = cases[pair.case_no]
                stats.pairs += 1
                if "error" in theirs:
                    stats.sim_errors += 1
                    stats.error_examples.setdefault(theirs["error"][:120], {"case": case, "request": pair.request})
                    continue
                ours, open_keys = kms_answer(answers[pair.case_no], pair.request["action"])
                stats.answers[f"kmsaudit {ours} / simulator {theirs['decision']}"] += 1
                if ours == "undecided":
                    stats.undecided += 1
                    for k in open_keys:
                        stats.undecided_keys[k] += 1
                    decidable = audit_time_keys(case)
                    if open_keys and all(k in decidable for k in open_keys):
                        label = ", ".join(open_keys)
                        stats.decidable_undecided[label] += 1
                        if label not in stats.decidable_examples:
                            stats.decidable_examples[label] = _minimal_undecided(case, pair.request, sim)
                    continue
                stats.decided += 1
                if not disagrees(ours, theirs):
                    stats.agree += 1
                    continue
                _disagreement(case, pair.request, ours, theirs, sim, known, stats, max_reproducers, out)
            if progress:
                print(
                    f"... {stats.pairs} pairs, {stats.decided} decided, {sum(stats.unknown.values())} unknown "
                    f"and {sum(stats.known.values())} known disagreements",
                    file=sys.stderr,
                )
    finally:
        stats.theirs_seconds, stats.theirs_decisions = sim.seconds, sim.decisions
        sim.close()
    return stats


def _minimal_undecided(case: dict[str, Any], request: dict[str, Any], sim: Simulator) -> dict[str, Any]:
    """A small case kmsaudit leaves undecided on keys known at audit time, and what the
    simulator answers for its request."""
    action = request["action"]

    def still(c: dict[str, Any], q: dict[str, Any]) -> bool:
        ours, keys = kms_answer(kmsaudit_answers(c), action)
        return ours == "undecided" and bool(keys) and all(k in audit_time_keys(c) for k in keys)

    c, q = minimize(case, request, still, budget=200)
    ours, keys = kms_answer(kmsaudit_answers(c), action)
    theirs = sim.ask([simulator_request(c, q, 0)])[0]
    return {
        "kmsaudit": ours,
        "open_keys": list(keys),
        "simulator": theirs.get("decision", theirs.get("error")),
        "action": action,
        "principal": caller_arn(c["principal"]),
        "request_context": request_context(c, q),
        "case": c,
    }


def _disagreement(
    case: dict[str, Any],
    request: dict[str, Any],
    ours: str,
    theirs: dict[str, Any],
    sim: Simulator,
    known: list[dict[str, Any]],
    stats: Stats,
    max_reproducers: int,
    out: Any,
) -> None:
    action = request["action"]

    def still(c: dict[str, Any], q: dict[str, Any]) -> bool:
        o, _ = kms_answer(kmsaudit_answers(c), action)
        if o != ours:
            return False
        t = sim.ask([simulator_request(c, q, 0)])[0]
        return disagrees(o, t)

    c, q = minimize(case, request, still)
    t = sim.ask([simulator_request(c, q, 0)])[0]
    direction = "kmsaudit allows, simulator denies" if ours == "allowed" else "kmsaudit denies, simulator allows"
    label = f"{direction}: {classify(c, features(c))}"
    divergence = known_divergence(c, q, ours, t, known)
    repro = {
        "class": label,
        "features": features(c),
        "kmsaudit": ours,
        "simulator": t.get("decision", t.get("error")),
        "simulator_ignored_keys": t.get("ignored", []),
        "action": action,
        "principal": caller_arn(c["principal"]),
        "request_context": request_context(c, q),
        "case": c,
    }
    if divergence is not None:
        stats.known[divergence] += 1
        stats.known_examples.setdefault(divergence, repro)
        return
    stats.unknown[label] += 1
    if label in stats.reproducers or len(stats.reproducers) >= max_reproducers:
        return
    stats.reproducers[label] = repro
    print(f"DISAGREEMENT {label}\n{json.dumps(repro, indent=1)}", file=out, flush=True)


def summary(stats: Stats, seed: int, version: str) -> dict[str, Any]:
    return {
        "seed": seed,
        "simulator": f"@cloud-copilot/iam-simulate {version}",
        "pairs": stats.pairs,
        "decided": stats.decided,
        "undecided": stats.undecided,
        "simulator_errors": stats.sim_errors,
        "agreements": stats.agree,
        "unknown_disagreements": dict(stats.unknown.most_common()),
        "known_divergences": dict(stats.known.most_common()),
        "answers": dict(stats.answers.most_common()),
        "undecided_by_condition_key": dict(stats.undecided_keys.most_common()),
        "undecided_on_audit_time_keys": dict(stats.decidable_undecided.most_common()),
        "kmsaudit_cases_per_second": round(stats.ours_decisions / stats.ours_seconds, 1)
        if stats.ours_seconds
        else None,
        "kmsaudit_pairs_per_second": round(stats.pairs / stats.ours_seconds, 1) if stats.ours_seconds else None,
        "simulator_decisions_per_second": round(stats.theirs_decisions / stats.theirs_seconds, 1)
        if stats.theirs_seconds
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=2000, help="pairs (case, action, request) to compare")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-reproducers", type=int, default=20, help="reproducers printed (one per class)")
    ap.add_argument("--report", type=Path, help="also write the summary, reproducers and examples here (JSON)")
    args = ap.parse_args(argv)
    try:
        version = ensure_simulator()
        stats = run(args.n, args.seed, max_reproducers=args.max_reproducers)
    except SimulatorUnavailable as exc:
        print(f"simulator unavailable: {exc}", file=sys.stderr)
        return 2
    s = summary(stats, args.seed, version)
    print(f"\n@cloud-copilot/iam-simulate {version}, seed {args.seed}")
    print(
        f"pairs compared {s['pairs']}: decided by kmsaudit {s['decided']}, undecided {s['undecided']}, "
        f"simulator errors {s['simulator_errors']}; agreements {s['agreements']}"
    )
    print(f"unknown disagreements {sum(stats.unknown.values())}:")
    for label, count in stats.unknown.most_common():
        print(f"  {count:6d}  {label}")
    print(f"known simulator divergences {sum(stats.known.values())}:")
    for label, count in stats.known.most_common():
        print(f"  {count:6d}  {label}")
    print("undecided by condition key (kmsaudit leaves it open):")
    for label, count in stats.undecided_keys.most_common():
        print(f"  {count:6d}  {label}")
    print("undecided though every open key is known at audit time (a finding in itself):")
    for label, count in stats.decidable_undecided.most_common():
        print(f"  {count:6d}  {label}")
    print(
        f"kmsaudit: {s['kmsaudit_cases_per_second']} cases/s (each: every action for the principal, one "
        f"evaluate_keys; {s['kmsaudit_pairs_per_second']} pairs/s); simulator: "
        f"{s['simulator_decisions_per_second']} decisions/s (one action, one request: one pair)"
    )
    if stats.error_examples:
        print("simulator errors (first of each):")
        for msg in list(stats.error_examples)[:10]:
            print(f"  {msg}")
    if args.report:
        s["reproducers"] = list(stats.reproducers.values())
        s["undecided_examples"] = stats.decidable_examples
        s["known_divergence_examples"] = stats.known_examples
        s["error_examples"] = stats.error_examples
        args.report.write_text(json.dumps(s, indent=1))
    return 1 if stats.unknown else 0


if __name__ == "__main__":
    sys.exit(main())
