"""Hostile input (issue #7, point 3): policies and config files written to break kmsaudit.

Policy documents — deep nesting, over 32 KB, wrong types, huge statement counts, odd Unicode,
invalid JSON, wildcards built to make a backtracking matcher explode — go through the evaluator
and through `kmsaudit evaluate`: no exception escapes, and a bad policy is a finding of its key
(SPEC §2.10), never a crash. Fuzzed config files end in exit 2 and one line naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from estate import config_text
from helpers import KEY_ARN, A, B, hostile_policy, principal, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmsaudit.cli.main import main
from kmsaudit.config.settings import load_config
from kmsaudit.errors import ConfigError
from kmsaudit.evaluator.match import wildcard_match
from kmsaudit.model import Evaluation, Grant

ROLE = f"arn:aws:iam::{B}:role/Reader"
# bench/faults.py raises these counts (KMSAUDIT_FUZZ_SCALE=10: ten times as many examples).
SCALE = float(os.environ.get("KMSAUDIT_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=int(examples * SCALE),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# Every character class hypothesis knows, surrogates and controls included.
odd_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40) | st.sampled_from(
    ["\u202e", "\x00", "İ", "ß", "ﬃ", "\ud800", "kms:\u200bDecrypt", "arn:aws:iam::" + B + ":root\x00", "🔑" * 50]
)
scalar = st.none() | st.booleans() | st.integers() | st.floats() | odd_text
anything = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4)
)
explosive = st.integers(5, 60).map(lambda n: "*a" * n + "b") | st.integers(5, 60).map(
    lambda n: "arn:aws:*:*:*:" + "*a" * n
)


def _deep(depth: int, leaf: str = '"x"') -> str:
    return "[" * depth + leaf + "]" * depth


@st.composite
def hostile_statement(draw: Any) -> Any:
    stmt: dict[str, Any] = {
        "Effect": draw(st.sampled_from(["Allow", "Deny", "allow", "", None, 1])),
        draw(st.sampled_from(["Principal", "NotPrincipal"])): draw(
            st.sampled_from(["*", {"AWS": "*"}, {"AWS": [ROLE, f"arn:aws:iam::{A}:root"]}, {"AWS": ROLE}])
            | st.dictionaries(st.sampled_from(["AWS", "Service", "Federated", "CanonicalUser", "Odd"]), anything)
            | explosive
            | anything
        ),
        draw(st.sampled_from(["Action", "NotAction"])): draw(
            st.sampled_from(["kms:*", "kms:Decrypt", "*", "kms:", ["kms:Encrypt", 7]]) | explosive | anything
        ),
        draw(st.sampled_from(["Resource", "NotResource"])): draw(
            st.sampled_from(["*", KEY_ARN]) | explosive | anything
        ),
    }
    if draw(st.booleans()):
        stmt["Condition"] = draw(
            st.dictionaries(
                st.sampled_from(
                    ["StringLike", "ArnLike", "ForAllValues:StringLike", "NumericLessThan", "Bool", "Bogus"]
                )
                | odd_text,
                st.dictionaries(
                    st.sampled_from(["aws:PrincipalArn", "kms:CallerAccount", "aws:PrincipalOrgID", "kms:ViaService"])
                    | odd_text,
                    explosive | anything,
                    max_size=3,
                )
                | anything,
                max_size=3,
            )
        )
    return stmt


@st.composite
def hostile_document(draw: Any) -> Any:
    """A key or IAM policy as AWS would never send it: a JSON value, or text that may not be JSON."""
    shape = draw(st.sampled_from(["statements", "many", "wrong", "deep", "big", "text", "truncated"]))
    if shape == "statements":
        return {"Version": "2012-10-17", "Statement": draw(st.lists(hostile_statement(), max_size=6))}
    if shape == "many":  # a huge statement count, each statement cheap
        stmt = draw(hostile_statement())
        return {"Statement": [stmt] * draw(st.integers(1000, 6000))}
    if shape == "wrong":
        return draw(anything | st.dictionaries(st.just("Statement"), anything, min_size=1))
    if shape == "deep":  # nesting far beyond what the json module can recurse into
        return '{"Statement": ' + _deep(draw(st.integers(900, 100_000))) + "}"
    if shape == "big":  # over 32 KB in one string, or in a list of principals
        n = draw(st.integers(33_000, 300_000))
        return {
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": [ROLE] * (n // 30)}, "Action": "kms:Decrypt", "Resource": "*"},
                {"Effect": "Allow", "Principal": "*", "Action": "kms:" + "x" * n, "Resource": "*"},
            ]
        }
    if shape == "text":
        return draw(odd_text)
    text = json.dumps({"Statement": draw(st.lists(hostile_statement(), min_size=1, max_size=3))}, default=str)
    return text[: draw(st.integers(0, max(0, len(text) - 1)))]


def _no_crash(evaluation: Evaluation) -> None:
    assert isinstance(evaluation, Evaluation)
    for finding in evaluation.findings:
        json.dumps(finding.to_dict())  # every finding still serialises in the contract shape


@fuzz(120)
@given(key_policy=hostile_document(), iam_policy=hostile_document(), constraints=anything)
def test_hostile_documents_never_raise_through_the_evaluator(
    report: Any, key_policy: Any, iam_policy: Any, constraints: Any
) -> None:
    reader = principal(ROLE, {"Statement": []})
    hostile_iam = principal(ROLE.replace("Reader", "Hostile"), iam_policy if isinstance(iam_policy, dict) else {})
    grant = Grant("g1", ROLE, ("Decrypt",), KEY_ARN, constraints=constraints if isinstance(constraints, dict) else None)
    _no_crash(run(key_policy, reader, hostile_iam, grants=(grant,), audited=(B,)))
    report.add(policies_fuzzed=2)


def test_a_hostile_policy_is_a_finding_of_its_key_not_silence() -> None:
    """SPEC §2.10: what cannot be read is reported as `unparseable` for that key."""
    for doc in ('{"Statement": ' + _deep(200_000) + "}", '{"Statement": [', "\x00\ud800"):
        evaluation = run(doc)
        assert [f.kind for f in evaluation.findings] == ["unparseable"], doc[:40]


def test_wildcards_built_to_backtrack_match_in_linear_time_and_correctly() -> None:
    """`*a*a*a…b` against `aaaa…` took exponential time in a regex; a scan could hang on one
    hostile policy. The matcher must still agree with the obvious answers."""
    assert not wildcard_match("*a" * 500 + "b", "a" * 5000)
    assert wildcard_match("*a" * 500 + "b", "a" * 5000 + "b")
    assert wildcard_match("a?c*" + "*x" * 50, "abc" + "x" * 60)
    assert not wildcard_match("a?c*" + "*x" * 50, "abc" + "x" * 49)
    explosive = "arn:aws:kms:*:" + "*1" * 40 + "2"
    evaluation = run(
        {
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:" + "*e" * 40 + "x", "Resource": "*"},
                {"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt", "Resource": explosive},
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "kms:Encrypt",
                    "Resource": "*",
                    "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::" + "*1" * 40 + "9:*"}},
                },
            ]
        },
        principal(ROLE, {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": explosive}]}),
        audited=(B,),
    )
    # The explosive action and resource patterns match nothing: the role gets no access from them.
    assert [f for f in evaluation.findings if f.principal == ROLE] == []
    # The explosive condition asks for forty 1s in a twelve-digit account field: no principal
    # anywhere satisfies it, so the "*" statement gives nothing (SPEC §3: decided, not guessed).
    assert evaluation.findings == ()
    # One that an outsider can satisfy (an account with five 1s then a 9, a role named a…ab) is
    # public, found in linear time all the same.
    satisfiable = "arn:aws:iam::" + "*1" * 5 + "9:role/" + "*a" * 40 + "b"
    evaluation = run(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "kms:Encrypt",
                    "Resource": "*",
                    "Condition": {"ArnLike": {"aws:PrincipalArn": satisfiable}},
                },
            ]
        }
    )
    (public,) = evaluation.findings
    assert public.principal == "*" and public.access == "public" and public.actions == ("kms:Encrypt",)


def test_a_32_kb_policy_stays_small_in_memory() -> None:
    """The worst of the above at 32 KB: evaluated within bounded memory (bench/faults.py times it)."""
    statements = hostile_policy(principal_arn=ROLE)["Statement"]
    tracemalloc.start()
    try:
        _no_crash(run({"Statement": statements}, principal(ROLE, {"Statement": statements}), audited=(B,)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@fuzz(60)
@given(doc=hostile_document())
def test_hostile_documents_through_kmsaudit_evaluate(
    tmp_path_factory: pytest.TempPathFactory, report: Any, doc: Any
) -> None:
    path = tmp_path_factory.mktemp("p") / "policy.json"
    text = doc if isinstance(doc, str) else json.dumps(doc, default=str)
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    code, out, err = _cli("evaluate", "--key-policy", str(path), "--key-arn", KEY_ARN, "--format", "json")
    report.add(cli_inputs_fuzzed=1)
    if code == 0:
        findings = json.loads(out)  # the contract shape, even for nonsense
        assert isinstance(findings, list)
    else:  # the input file itself is not JSON: one clear line naming it
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith(f"kmsaudit: error: --key-policy {path}: "), err


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(_deep(500_000).encode(), id="nested-500k"),
        pytest.param(b'{"Statement": "' + b"\xff\xfe" * 1000 + b'"}', id="not-utf8"),
        pytest.param(json.dumps({"Statement": [{"Principal": "*"}] * 200_000}).encode(), id="200k-statements"),
        pytest.param(b"\x00" * 100_000, id="nul-bytes"),
    ],
)
def test_the_console_script_never_shows_a_traceback(tmp_path: Path, content: bytes, report: Any) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "evaluate", "--key-policy", str(path), "--key-arn", KEY_ARN],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert "Traceback" not in done.stderr and done.returncode in (0, 2), done.stderr[-2000:]
    report.add(cli_inputs_fuzzed=1)
    if done.returncode == 2:
        assert done.stderr.count("\n") == 1 and str(path) in done.stderr


VALID_CONFIG = config_text(extra="concurrency = 8\nquotas = { ListGrants = 50 }") + "\n[trust]\naccounts = []\n"
toml_value = st.sampled_from(
    ['"x"', "1", "-5", "1e999", "nan", "true", "[]", "{}", '["us-east-1", 3]', '"15m"', '"* * *"', '"0s"', "1979-05-27"]
) | st.integers(1, 5000).map(_deep)


@st.composite
def fuzzed_config(draw: Any) -> bytes:
    text = VALID_CONFIG
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(["set", "insert", "slice", "bytes", "unicode"]))
        lines = text.splitlines()
        at = draw(st.integers(0, len(lines)))
        if mutation == "set":  # a known key, a wrong value
            key = draw(
                st.sampled_from(
                    ["regions", "interval", "concurrency", "max_attempts", "quota_margin", "id", "role_arn", "path"]
                )
            )
            lines.insert(at, f"{key} = {draw(toml_value)}")
        elif mutation == "insert":  # an unknown key or table, maybe with a name full of odd characters
            name = (
                json.dumps(draw(odd_text))
                if draw(st.booleans())
                else draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
            )
            lines.insert(at, draw(st.sampled_from([f"{name} = {draw(toml_value)}", f"[{name}]", f"[[{name}]]"])))
        elif mutation == "slice":
            start = draw(st.integers(0, len(text)))
            text = text[:start] + draw(odd_text) + text[start + draw(st.integers(0, 30)) :]
            continue
        elif mutation == "bytes":
            return text.encode("utf-8", "surrogatepass") + draw(st.binary(min_size=1, max_size=20))
        else:
            lines.insert(at, draw(odd_text))
        text = "\n".join(lines)
    return text.encode("utf-8", "surrogatepass")


@fuzz(250)
@given(content=fuzzed_config())
def test_fuzzed_config_files_are_exit_2_and_one_line(
    tmp_path_factory: pytest.TempPathFactory, report: Any, content: bytes
) -> None:
    path = tmp_path_factory.mktemp("c") / "kmsaudit.toml"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message and len(message) < 600, message
        assert message.startswith(f"{path}: "), message
        code, _, err = _cli("scan", "--config", str(path))
        # (the CLI's deeper stack may meet a deep nesting first: the line may differ, not its form)
        assert code == 2 and err.startswith(f"kmsaudit: error: {path}: ") and err.count("\n") == 1, err
        report.add(configs_rejected=1)
    report.add(configs_fuzzed=1)
    # else: the mutation happened to leave a valid file; loading it is all there is to check


def test_an_unpaired_surrogate_in_a_policy_is_unparseable_not_a_traceback(tmp_path: Path) -> None:
    """SPEC §2.10 (found by the fuzzer above): `"\\ud800"` alone is valid JSON but no text — it can
    be neither matched, stored in SQLite nor printed. The key policy is reported unparseable,
    never an exception."""
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"Service": "\ud800"}, "Action": "kms:*", "Resource": "*"},
        ],
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))  # the surrogate escaped, as JSON allows
    code, out, err = _cli("evaluate", "--key-policy", str(path), "--key-arn", KEY_ARN, "--format", "json")
    assert code == 0, err
    findings = json.loads(out)
    assert [f["kind"] for f in findings] == ["unparseable"]
    assert "unpaired surrogate" in json.dumps(findings)
    # a surrogate pair is text (an emoji): evaluated as usual
    path.write_text(json.dumps({**doc, "Statement": [doc["Statement"][0] | {"Sid": "\U0001f600"}]}))
    code, out, err = _cli("evaluate", "--key-policy", str(path), "--key-arn", KEY_ARN, "--format", "json")
    assert code == 0 and [f["access"] for f in json.loads(out)] == ["public"], (err, out)
