"""Things wrong or risky in a key policy that are not access (issue #2, SPEC §2.3–§2.5)."""

from __future__ import annotations

from kmsaudit.evaluator.actions import CROSS_ACCOUNT_MASK, pattern_mask
from kmsaudit.evaluator.policy import Policy
from kmsaudit.model import KeyRecord, Lint

MAX_KEY_POLICY_BYTES = 32768  # 000_…txt: "cannot exceed 32 KB (32,768 bytes)"


def _is_kms_pattern(pattern: str) -> bool:
    text = pattern.strip().lower()
    return ":" not in text or text.split(":", 1)[0] in ("kms", "kms*", "*")


def key_policy_lints(key: KeyRecord, policy: Policy) -> list[Lint]:
    lints = [Lint("statement-skipped", problem, key_arn=key.arn, account=key.account) for problem in policy.problems]
    if isinstance(key.policy, str) and len(key.policy.encode()) > MAX_KEY_POLICY_BYTES:
        lints.append(
            Lint(
                "key-policy-too-large",
                f"key policy is {len(key.policy.encode())} bytes; AWS allows 32,768",
                key_arn=key.arn,
                account=key.account,
            )
        )
    for stmt in policy.statements:
        for pattern in stmt.action_patterns:
            if _is_kms_pattern(pattern) and not pattern_mask(pattern):
                # 002_…txt: `"Action": "kms:"` is accepted by the CLI example and grants nothing.
                lints.append(
                    Lint(
                        "action-matches-nothing",
                        f"action pattern {pattern!r} matches no KMS action",
                        key_arn=key.arn,
                        account=key.account,
                        sid=stmt.sid,
                    )
                )
        if stmt.principals is None:
            lints.append(
                Lint(
                    "statement-without-principal",
                    "a key policy statement has no Principal: it applies to nobody",
                    key_arn=key.arn,
                    account=key.account,
                    sid=stmt.sid,
                )
            )
            continue
        external = [
            r for r in stmt.principals.refs if r.kind in ("account", "iam", "session") and r.account != key.account
        ]
        for ref in stmt.principals.refs:
            if ref.kind == "unique-id":
                lints.append(
                    Lint(
                        "stale-principal",
                        f"principal {ref.value} is a unique id: the user or role it "
                        "named was deleted, and it grants nothing",
                        key_arn=key.arn,
                        account=key.account,
                        principal=ref.value,
                        sid=stmt.sid,
                    )
                )
            elif ref.kind == "invalid":
                lints.append(
                    Lint(
                        "invalid-principal",
                        f"principal {ref.value[:200]!r} is not a valid principal "
                        "(IAM groups and wildcard ARNs are not)",
                        key_arn=key.arn,
                        account=key.account,
                        principal=ref.value[:200],
                        sid=stmt.sid,
                    )
                )
        if not stmt.allow or not (external or stmt.principals.any or stmt.not_principal):
            continue
        for pattern in stmt.action_patterns:
            mask = pattern_mask(pattern)
            if stmt.not_action or not mask or mask & CROSS_ACCOUNT_MASK:
                continue
            who = ", ".join(r.value for r in external) or "*"
            lints.append(
                Lint(
                    "ineffective-cross-account-action",
                    f"{pattern} is allowed to {who}, but it never works across accounts (003_…txt)",
                    key_arn=key.arn,
                    account=key.account,
                    principal=who,
                    sid=stmt.sid,
                )
            )
    return lints
