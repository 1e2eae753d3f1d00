"""Issue #25 item 5: every destination (report, demo folder, metrics textfile, store) is checked
before the work starts, one line and exit 2; files are written atomically without replacing a
symbolic link, a device or a pipe; the textfile and the Pushgateway fail alike, as the units say."""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from synthetic import scan

from kmsaudit.cli.main import main
from kmsaudit.errors import StoreUnusable
from kmsaudit.store.database import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder this user cannot create files in (as root: /proc/sys, whose files root cannot add to)."""
    if os.geteuid() == 0:
        folder = Path("/proc/sys")
        if os.access(folder, os.W_OK):
            pytest.skip("no read-only folder for root here")
        yield folder
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "k.toml"
    path.write_text('[[accounts]]\nid = "111122223333"\n\n[store]\npath = "k.db"\n')
    store = Store(tmp_path / "k.db")
    store.save_scan(scan(2))
    store.close()
    return path


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("kmsaudit: error: ") and "Traceback" not in err
    return err


def test_a_report_into_a_read_only_folder_is_one_line(
    config: Path, read_only_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It ended in a traceback, exit 1."""
    target = read_only_folder / "report.html"
    err = _one_line_exit_2(capsys, "report", "--config", str(config), "--html", str(target))
    assert f"--html {target}: folder {read_only_folder} is not writable" in err


def test_a_report_into_a_missing_folder_is_one_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "nope" / "report.html"
    err = _one_line_exit_2(capsys, "report", "--config", str(config), "--html", str(target))
    assert f"no folder {tmp_path / 'nope'}" in err


def test_a_symlinked_report_is_written_through_to_its_target(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The link was replaced by a regular file."""
    real = tmp_path / "reports" / "latest.html"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "report.html"
    link.symlink_to(real)
    assert main(["report", "--config", str(config), "--html", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert "<html" in real.read_text().lower()
    dangling = tmp_path / "new.html"
    dangling.symlink_to(tmp_path / "reports" / "new-target.html")
    assert main(["report", "--config", str(config), "--html", str(dangling)]) == 0
    assert dangling.is_symlink() and (tmp_path / "reports" / "new-target.html").exists()
    capsys.readouterr()


def test_a_pipe_or_device_is_written_through_never_replaced(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As root, `report --html /dev/stdout` replaced the device link with a file. A FIFO stands for
    the device here (replacing /dev/stdout on a shared machine is not a test to run)."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as pipe:
            got.append(pipe.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    link = tmp_path / "stdout"
    link.symlink_to(fifo)
    code = main(["report", "--config", str(config), "--html", str(link)])
    reader.join(timeout=10)
    assert code == 0, capsys.readouterr().err
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    assert got and b"<html" in got[0].lower()
    capsys.readouterr()


def test_a_socket_is_refused(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        err = _one_line_exit_2(capsys, "report", "--config", str(config), "--html", str(path))
    assert "is not a regular file" in err


def test_the_demo_on_a_read_only_location_is_one_line_before_it_starts(
    read_only_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It ended in a traceback, exit 1."""
    err = _one_line_exit_2(capsys, "demo", "--dir", str(read_only_folder / "kmsaudit-demo"))
    assert "--dir" in err and "not writable" in err


def test_a_store_in_a_missing_folder_is_an_error_not_created(tmp_path: Path) -> None:
    """A typo in [store] path made a new folder and an un-alerted baseline."""
    path = tmp_path / "typo" / "kmsaudit.db"
    with pytest.raises(StoreUnusable, match=r"no folder .*typo.*create it"):
        Store(path)
    assert not path.parent.exists()


def test_the_scan_timer_unit_and_readme_agree_with_the_exit_codes() -> None:
    """Exits 3 and 4 are reported, not failures; 2 (a usage or config error, a destination that
    cannot be written) fails the unit; the README says the same."""
    unit = (ROOT / "deploy" / "systemd" / "kmsaudit-scan.service").read_text()
    (line,) = re.findall(r"^SuccessExitStatus=(.*)$", unit, re.M)
    assert set(line.split()) == {"3", "4"}
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "metrics could not be exported (the textfile or the Pushgateway alike): exit 4" in readme
    assert "counts 3 and 4 as success (`SuccessExitStatus=3 4`)" in readme
