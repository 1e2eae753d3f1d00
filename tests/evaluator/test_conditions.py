"""Operator families of SPEC §2.7, one clause at a time, on a context with known values."""

from __future__ import annotations

import pytest

from kmsaudit.evaluator.conditions import FALSE, TRUE, UNKNOWN, Context, Excluded, evaluate_clause
from kmsaudit.evaluator.policy import parse_policy

CTX = Context(
    principal={
        "aws:principalaccount": ("444455556666",),
        "aws:principalarn": ("arn:aws:iam::444455556666:role/app/Reader",),
        "aws:principalisawsservice": ("false",),
        "aws:principalorgid": Excluded(frozenset({"o-ours"}), may_be_absent=True),
        "aws:username": ("alice",),
    },
    resource={
        "kms:resourcealiases": ("alias/app", "alias/db"),
        "aws:resourceaccount": ("111122223333",),
        "test:number": ("42",),
        "test:date": ("2024-06-01T00:00:00Z",),
        "test:ip": ("10.1.2.3",),
    },
    tags={"env": "prod"},
)


def clause(operator: str, key: str, values: object):
    doc = {
        "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*", "Condition": {operator: {key: values}}}]
    }
    return parse_policy(doc).statements[0].conditions[0]


@pytest.mark.parametrize(
    ("operator", "key", "values", "expected"),
    [
        ("StringEquals", "aws:PrincipalAccount", "444455556666", TRUE),
        ("StringEquals", "aws:PrincipalAccount", ["1", "444455556666"], TRUE),  # values OR
        ("StringNotEquals", "aws:PrincipalAccount", ["1", "444455556666"], FALSE),  # negated: none of them
        ("StringEqualsIgnoreCase", "aws:ResourceTag/ENV", "PROD", TRUE),
        ("StringLike", "aws:PrincipalArn", "arn:aws:iam::444455556666:role/*", TRUE),
        ("StringNotLike", "aws:PrincipalArn", "arn:aws:iam::*:role/app/*", FALSE),
        ("ArnLike", "aws:PrincipalArn", "arn:aws:iam::444455556666:role/app/*", TRUE),
        ("ArnNotEquals", "aws:PrincipalArn", "arn:aws:iam::444455556666:role/app/Reader", FALSE),
        ("Bool", "aws:PrincipalIsAWSService", "false", TRUE),
        ("Bool", "aws:PrincipalIsAWSService", True, FALSE),
        ("NumericLessThan", "test:number", "50", TRUE),
        ("NumericGreaterThanEquals", "test:number", 43, FALSE),
        ("NumericNotEquals", "test:number", "42", FALSE),
        ("DateGreaterThan", "test:date", "2024-01-01T00:00:00Z", TRUE),
        ("DateLessThan", "test:date", "2024-01-01T00:00:00Z", FALSE),
        ("IpAddress", "test:ip", "10.0.0.0/8", TRUE),
        ("NotIpAddress", "test:ip", "10.0.0.0/8", FALSE),
        ("Null", "aws:ResourceTag/missing", "true", TRUE),
        ("Null", "aws:ResourceTag/env", "true", FALSE),
        ("Null", "aws:ResourceTag/env", "false", TRUE),
        ("StringEquals", "aws:ResourceTag/missing", "x", FALSE),
        ("StringEqualsIfExists", "aws:ResourceTag/missing", "x", TRUE),
        ("StringEqualsIfExists", "aws:ResourceTag/env", "dev", FALSE),
        ("StringNotEquals", "aws:ResourceTag/missing", "x", TRUE),
        ("ForAllValues:StringLike", "kms:ResourceAliases", "alias/*", TRUE),
        ("ForAllValues:StringLike", "kms:ResourceAliases", "alias/app", FALSE),
        ("ForAnyValue:StringEquals", "kms:ResourceAliases", "alias/db", TRUE),
        ("ForAnyValue:StringEquals", "kms:ResourceAliases", "alias/none", FALSE),
        ("ForAnyValue:StringEquals", "aws:ResourceTag/missing", "x", FALSE),
        ("ForAllValues:StringEquals", "aws:ResourceTag/missing", "x", TRUE),
        ("StringEquals", "kms:ViaService", "s3.us-east-1.amazonaws.com", UNKNOWN),  # request-time
        ("StringEquals", "kms:EncryptionContext:app", "x", UNKNOWN),
        ("Bool", "aws:SecureTransport", "true", UNKNOWN),
        ("StringEquals", "aws:PrincipalOrgID", "o-ours", FALSE),  # known not to be ours
        ("StringNotEquals", "aws:PrincipalOrgID", "o-ours", TRUE),  # the perimeter pattern, decided
        ("StringEquals", "aws:PrincipalOrgID", "o-theirs", UNKNOWN),
        ("StringEquals", "aws:ResourceAccount", "111122223333", TRUE),
        ("StringEquals", "aws:PrincipalArn", "arn:aws:iam::444455556666:user/${aws:username}", FALSE),
        ("StringLike", "aws:PrincipalArn", "arn:aws:iam::${aws:PrincipalAccount}:role/*", TRUE),
        ("StringEquals", "aws:PrincipalArn", "${aws:SourceIdentity}", UNKNOWN),  # variable not known
        ("NoSuchOperator", "aws:PrincipalAccount", "1", UNKNOWN),
        ("stringequals", "AWS:PRINCIPALACCOUNT", "444455556666", TRUE),  # names are case-insensitive
    ],
)
def test_operator(operator: str, key: str, values: object, expected: int) -> None:
    assert evaluate_clause(clause(operator, key, values), CTX) == expected
