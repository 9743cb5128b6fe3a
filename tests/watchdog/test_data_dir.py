"""A read-only, missing or foreign data directory: one line naming it, exit 2, for every process that writes it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

COMMANDS = (["run"], ["bridge", "--account", "main"], ["pair", "--account", "main"], ["drops-api"])


def _cli(*args: str, wrap: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*wrap, sys.executable, "-m", "watchdog.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def _read_only_mount_works(path: Path) -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {path} {path} && "
                            f"mount -o remount,bind,ro {path}"], capture_output=True)
    return probe.returncode == 0


def test_a_read_only_data_dir_is_one_line_and_exit_2(config_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "ro-data"
    data.mkdir()
    if shutil.which("unshare") is None or not _read_only_mount_works(data):
        pytest.skip("needs root for a read-only bind mount in a private mount namespace (unshare -m)")
    for command in COMMANDS:
        mount = f"mount --bind {data} {data} && mount -o remount,bind,ro {data} && exec \"$@\""
        result = _cli(command[0], "--config", str(config_path), "--data-dir", str(data), *command[1:],
                      wrap=("unshare", "-m", "sh", "-c", mount, "sh"))
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.strip() == (f"wa-watchdog {command[0]}: data directory {data} is not writable by root: "
                                          "Read-only file system"), command


@pytest.mark.slow
def test_a_data_dir_that_cannot_be_created_names_the_path(config_path: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    for data in (tmp_path / "file" / "data", tmp_path / "file"):
        for command in COMMANDS:
            result = _cli(command[0], "--config", str(config_path), "--data-dir", str(data), *command[1:])
            assert result.returncode == 2, (command, result.stderr)
            assert f"data directory {data} " in result.stderr and "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_missing_data_dir_is_created(config_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    result = _cli("pair", "--config", str(config_path), "--data-dir", str(data), "--account", "main")
    assert data.is_dir()
    assert result.returncode == 2 and "only neonize accounts are paired" in result.stderr  # got past the check
