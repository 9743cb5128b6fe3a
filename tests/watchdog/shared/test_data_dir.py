"""A read-only, missing or foreign data directory: one line naming it, exit 2, for every process that writes it."""
from __future__ import annotations

import os
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


@pytest.mark.parametrize("data_dir", ["/", "/run", "/var/lib", "/tmp", "/usr/../etc"])
def test_a_system_directory_is_no_data_dir(write_config, data_dir: str) -> None:
    """Not even `check` accepts it (it used to say ok and advise `chmod 0750 /`); `run` would have chmodded it."""
    from tests.conftest import BASE_CONFIG
    config = write_config(BASE_CONFIG.replace('data_dir = "data"', f'data_dir = "{data_dir}"'))
    before = {path: Path(path).stat().st_mode for path in ("/", "/run", "/var/lib", "/tmp", "/etc")}
    for command in (["check"], ["run"], ["pair", "--account", "main"]):
        result = _cli(command[0], "--config", str(config), *command[1:])
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        shown = Path(data_dir).resolve()
        assert result.stderr.strip() == (f"wa-watchdog {command[0]}: configuration error: {config}: data_dir: {shown} "
                                         "is a system directory; the data directory must be the service's own, "
                                         "e.g. /var/lib/wa-watchdog")
    assert _cli("status", "--config", str(config), "--data-dir", "/").returncode == 2
    assert {path: Path(path).stat().st_mode for path in before} == before


def test_root_does_not_write_into_a_data_dir_another_user_owns(config_path: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("about what root may do")
    data = tmp_path / "theirs"
    data.mkdir(mode=0o755)
    os.chown(data, 65534, 65534)
    result = _cli("pair", "--config", str(config_path), "--data-dir", str(data), "--account", "main")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"wa-watchdog pair: data_dir {data} belongs to ")
    assert list(data.iterdir()) == [] and data.stat().st_mode & 0o777 == 0o755  # nothing made, nothing chmodded
