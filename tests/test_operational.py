"""Issue #13, without AWS: kmsaudit never damages what it touches, never reads a missing store
as all-clear, and exits as README's exit codes say. Each test reproduces a numbered problem."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kmsaudit.store.database import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples"
KEY_ARN = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def kmsaudit(
    *args: str, cwd: Path | None = None, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens: no test here may reach AWS
    return subprocess.run(
        [sys.executable, "-m", "kmsaudit", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def config(tmp_path: Path, store: str, name: str = "k.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'[[accounts]]\nid = "111122223333"\n\n[store]\npath = "{store}"\n')
    return path


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# -- 1. destructive ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["scan", "findings", "drift"])
def test_a_store_path_that_is_a_directory_is_refused_and_left_alone(tmp_path: Path, command: str) -> None:
    directory = tmp_path / "var-lib-kmsaudit"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    proc = kmsaudit(command, "--config", str(config(tmp_path, str(directory))))
    assert proc.returncode == 2
    assert "is a directory" in one_line_error(proc)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755  # never chmod-ed
    assert list(directory.iterdir()) == []


def test_a_symlink_to_a_directory_and_a_device_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(directory)
    proc = kmsaudit("findings", "--config", str(config(tmp_path, str(link))))
    assert proc.returncode == 2 and "is a directory" in one_line_error(proc)
    before = os.stat("/dev/null").st_mode
    proc = kmsaudit("findings", "--config", str(config(tmp_path, "/dev/null")))
    assert proc.returncode == 2 and "not a regular file" in one_line_error(proc)
    assert os.stat("/dev/null").st_mode == before


def test_a_file_that_is_not_a_kmsaudit_database_is_refused_and_its_mode_kept(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 100)
    os.chmod(notes, 0o644)
    proc = kmsaudit("findings", "--config", str(config(tmp_path, str(notes))))
    assert proc.returncode == 2 and "not" in one_line_error(proc) and "database" in proc.stderr
    assert stat.S_IMODE(notes.stat().st_mode) == 0o644
    assert notes.read_text() == "my notes\n" * 100


def test_only_the_files_kmsaudit_created_have_their_mode_changed(tmp_path: Path) -> None:
    ours = tmp_path / "ours.db"
    Store(ours).close()
    os.chmod(ours, 0o644)
    Store(ours).close()  # a kmsaudit database left readable by others is closed up
    assert stat.S_IMODE(ours.stat().st_mode) == 0o600
    empty = tmp_path / "empty.db"
    empty.touch(mode=0o640)
    os.chmod(empty, 0o640)
    Store(empty).close()  # made by somebody else: used, not chmod-ed
    assert stat.S_IMODE(empty.stat().st_mode) == 0o640


# -- 6. read commands on a missing store; paths relative to the config file ---------------------
@pytest.mark.parametrize("command", ["findings", "drift", "snapshots"])
def test_read_commands_on_a_missing_store_say_so_and_create_nothing(tmp_path: Path, command: str) -> None:
    proc = kmsaudit(command, "--config", str(config(tmp_path, "never-scanned.db")))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "no snapshot database" in line and "kmsaudit scan" in line
    assert "No cross-account access found" not in proc.stdout and "No drift" not in proc.stdout
    assert not (tmp_path / "never-scanned.db").exists()


def test_store_path_is_relative_to_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    Store(folder / "k.db").close()  # an existing (empty) database beside the config
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = kmsaudit("findings", "--config", str(config(folder, "k.db")), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert not (elsewhere / "k.db").exists()


# -- 9. exit code 1 is for the unexpected only ------------------------------------------------------
def test_an_unknown_snapshot_is_a_usage_error(tmp_path: Path) -> None:
    Store(tmp_path / "k.db").close()
    proc = kmsaudit("findings", "--config", str(config(tmp_path, "k.db")), "--snapshot", "999")
    assert proc.returncode == 2 and "no snapshot 999" in one_line_error(proc)


def test_the_daemons_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = config(tmp_path, "k.db")
        path.write_text(path.read_text() + f'\n[daemon]\nlisten = "127.0.0.1:{port}"\n')
        proc = kmsaudit("daemon", "--config", str(path))
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


# -- 7. a pipe closed early keeps the real exit code --------------------------------------------------
def test_evaluate_keeps_its_exit_code_when_the_reader_goes_away(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "kmsaudit",
        "evaluate",
        "--key-policy",
        str(EXAMPLES / "key-policy.json"),
        "--key-arn",
        KEY_ARN,
        "--iam",
        f"444455556666={EXAMPLES / 'iam-444455556666.json'}",
        "--grants",
        str(EXAMPLES / "grants.json"),
        "--fail-on",
        "low",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 3, err  # --fail-on low: findings at or above it
    assert "Traceback" not in err and "Exception ignored" not in err
