"""README's "Running against real AWS" (issue #13): its config and every command in it, exactly
as written, run against the emulator (AWS_ENDPOINT_URL), in the folder the config is in."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import get_until

from kmsaudit.demo.emulator import create_key, key_policy

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> tuple[str, list[str]]:
    text = README.read_text().split("### Running against real AWS", 1)[1].split("\n### ", 1)[0]
    (toml,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    (sh,) = re.findall(r"```sh\n(.*?)```", text, re.S)
    commands = [line.split("#", 1)[0].strip() for line in sh.splitlines() if line.strip()]
    return toml, commands


@pytest.mark.xdist_group("port-9465")  # serves the README's 127.0.0.1:9465 (the demo test uses --port 0)
def test_the_readme_real_aws_path_runs_as_written(tmp_path: Path, aws: str) -> None:
    toml, commands = section()
    assert [c.split()[1] for c in commands] == ["check", "scan", "findings", "snapshots", "drift", "daemon"]
    account = re.search(r'id = "(\d{12})"', toml).group(1)  # type: ignore[union-attr]
    for region in re.search(r"regions = \[(.*?)\]", toml).group(1).replace('"', "").split(", "):  # type: ignore[union-attr]
        create_key(
            account,
            region,
            key_policy(
                account,
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                },
            ),
        )
    (tmp_path / "kmsaudit.toml").write_text(toml)
    env = {**os.environ, "AWS_ENDPOINT_URL": aws}
    outputs = {}
    for command in commands[:-1]:
        argv = shlex.split(command)
        assert argv[0] == "kmsaudit"
        proc = subprocess.run(
            [sys.executable, "-m", "kmsaudit", *argv[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        outputs[argv[1]] = proc.stdout
    assert "✗" not in outputs["check"] and "checks passed" in outputs["check"]
    assert outputs["scan"].count("arn:aws:iam::444455556666:root") == 2  # one key per region
    assert "arn:aws:iam::444455556666:root" in outputs["findings"]
    assert re.search(r"^\s+1\s+\S+ \S+\s+2\s+2\s+2$", outputs["snapshots"], re.M)  # id, date, keys, findings, scopes
    assert outputs["drift"].strip() == "No drift."
    assert (tmp_path / "kmsaudit.db").exists()  # relative to the config file's folder

    daemon = shlex.split(commands[-1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 9465)) != 0, "port 9465 is taken: the README's daemon cannot start"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsaudit", *daemon[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        status, metrics = get_until("http://127.0.0.1:9465/metrics", lambda s, body: "kmsaudit_scope_up{" in body)
        findings = [line for line in metrics.splitlines() if line.startswith("kmsaudit_findings{")]
        assert status == 200 and any('access="potential"' in line for line in findings), findings
        assert get_until("http://127.0.0.1:9465/readyz", lambda s, _: s == 200)[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
