"""The differential fuzzer of issue #26 (bench/differential.py), small and with a fixed seed.

A few hundred (case, action, request) pairs through kmsaudit and through the pinned
`@cloud-copilot/iam-simulate`: no disagreement outside bench/known_divergences.json. Skipped,
with the reason, where node is missing or the package is neither in bench/iamsim/node_modules
nor installable by `npm ci`. The fuzzer's own parts (the request context it builds, the
minimizer, the known-divergence matchers) are tested without node.
"""

from __future__ import annotations

import importlib.util
import io
import json
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("differential", REPO / "bench" / "differential.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["differential"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


diff = _load()


def _case(key_statements: list[dict[str, Any]], kind: str = "role", **extra: Any) -> dict[str, Any]:
    case: dict[str, Any] = {
        "principal": {"kind": kind, "name": "App1", "tags": {}},
        "key_policy": {"Version": diff.VERSION, "Statement": key_statements},
        "identity": [{"Version": diff.VERSION, "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}],
        "boundary": None,
        "b_member": False,
        "a_member": False,
        "scps": [],
        "rcps": [],
    }
    case.update(extra)
    return case


def _allow(principal: Any, action: Any = "kms:Decrypt", **condition: Any) -> dict[str, Any]:
    stmt = {"Effect": "Allow", "Principal": principal, "Action": action, "Resource": "*"}
    if condition:
        stmt["Condition"] = condition
    return stmt


def test_the_request_context_is_what_aws_puts_in_a_role_sessions_request() -> None:
    case = _case([], b_member=True, a_member=True)
    case["principal"]["tags"] = {"team": "red"}
    ctx = diff.request_context(case, {"action": "kms:Decrypt", "context": {"aws:SourceIp": "203.0.113.5"}})
    assert ctx["aws:PrincipalArn"] == f"arn:aws:iam::{diff.B}:role/App1"  # the role's ARN, not the session's
    assert ctx["aws:PrincipalType"] == "AssumedRole"
    assert "aws:username" not in ctx  # a role has no user name
    assert ctx["aws:PrincipalTag/team"] == "red"
    assert ctx["aws:PrincipalOrgID"] == ctx["aws:ResourceOrgID"] == diff.ORG
    assert ctx["aws:SourceIp"] == "203.0.113.5"
    request = diff.simulator_request(case, {"action": "kms:Decrypt", "context": {}}, 7)
    assert request["principal"] == f"arn:aws:sts::{diff.B}:assumed-role/App1/{diff.SESSION}"


def test_kmsaudits_answer_per_action() -> None:
    root_b = {"AWS": f"arn:aws:iam::{diff.B}:root"}
    answers = diff.kmsaudit_answers(
        _case([_allow(root_b), _allow(root_b, "kms:Encrypt", StringEquals={"kms:ViaService": diff.VIA[0]})])
    )
    assert diff.kms_answer(answers, "kms:Decrypt") == ("allowed", ())
    assert diff.kms_answer(answers, "kms:Encrypt") == ("undecided", ("kms:viaservice",))
    assert diff.kms_answer(answers, "kms:DescribeKey") == ("denied", ())


def test_the_minimizer_keeps_only_what_the_failure_needs() -> None:
    gen = diff.Gen(random.Random(5))
    case = gen.case()
    case["key_policy"]["Statement"].append(_allow("*", "kms:Decrypt", StringEquals={"aws:SourceIp": "x"}))
    request = gen.request()

    def still(c: dict[str, Any], q: dict[str, Any]) -> bool:
        return '"aws:SourceIp": "x"' in json.dumps(c)

    small, _ = diff.minimize(case, request, still)
    assert still(small, request)
    assert small["boundary"] is None and not small["scps"] and not small["rcps"]
    assert len(small["key_policy"]["Statement"]) == 1
    assert small["key_policy"]["Statement"][0]["Condition"] == {"StringEquals": {"aws:SourceIp": "x"}}


def test_known_divergences_match_only_their_shape() -> None:
    known = diff.load_known()
    assert all(k["quote"] and k["url"].startswith("https://docs.aws.amazon.com/") for k in known)
    me = f"arn:aws:iam::{diff.B}:user/App1"
    deny_all_but_me = {"Effect": "Deny", "NotPrincipal": {"AWS": me}, "Action": "*", "Resource": "*"}
    allowed = {"decision": "Allowed"}
    case = _case([deny_all_but_me], kind="user")
    decrypt = {"action": "kms:Decrypt", "context": {}}
    assert diff.known_divergence(case, decrypt, "denied", allowed, known) == "notprincipal-without-account"
    deny_all_but_me["NotPrincipal"] = {"AWS": [me, f"arn:aws:iam::{diff.B}:root"]}
    assert diff.known_divergence(case, decrypt, "denied", allowed, known) is None
    deletion = {"action": "kms:ScheduleKeyDeletion", "context": {}}
    assert diff.known_divergence(_case([]), deletion, "denied", allowed, known) == "not-cross-account-action"
    variable = _allow("*", StringNotLike={"aws:PrincipalArn": f"arn:aws:iam::{diff.B}:user/${{aws:username}}"})
    assert diff.known_divergence(_case([variable]), decrypt, "allowed", {"decision": "ImplicitlyDenied"}, known) == (
        "policy-variable-no-value-negated"
    )
    assert diff.known_divergence(_case([variable], kind="user"), decrypt, "allowed", allowed, known) is None
    # The key itself absent too: the simulator applies the absent-key rule (negated: true), rightly.
    untagged = _allow("*", StringNotLike={"aws:PrincipalTag/env": "${aws:PrincipalTag/env}"})
    assert diff.known_divergence(_case([untagged]), decrypt, "allowed", allowed, known) is None
    ignored = {"decision": "ImplicitlyDenied", "ignored": ["kms:EncryptionContext:app"]}
    ec = _case([_allow({"AWS": me}, StringEquals={"kms:EncryptionContext:app": "x"})])
    assert diff.known_divergence(ec, decrypt, "allowed", ignored, known) == "encryption-context-key-dropped"


def test_a_fixed_seed_run_has_no_unknown_disagreement() -> None:
    try:
        diff.ensure_simulator()
    except diff.SimulatorUnavailable as exc:
        pytest.skip(f"the differential run needs the pinned simulator: {exc}")
    out = io.StringIO()
    stats = diff.run(300, 26, out=out, progress=False)
    assert stats.pairs == 300
    assert stats.sim_errors == 0, stats.error_examples
    assert stats.decided > 150  # the run decides most pairs, or it compares nothing
    assert not stats.unknown, out.getvalue()
