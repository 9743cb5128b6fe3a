"""The shipped systemd units: the directives the issue asks for, and `systemd-analyze verify` with no output at all."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = ROOT / "conf" / "systemd"
SHIPPED_BINARY = "/opt/wa-watchdog/.venv/bin/wa-watchdog"
VENV_BINARY = Path(sys.executable).parent / "wa-watchdog"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def verify(*paths: Path, cwd: Path) -> str:
    """Everything systemd-analyze verify says (it exits 0 on some warnings, so any output is a failure)."""
    done = subprocess.run(["systemd-analyze", "verify", *map(str, paths)], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    return (done.stdout + done.stderr + ("" if done.returncode == 0 else f"\nexit status {done.returncode}")).strip()


def with_venv_binary(unit: Path, into: Path) -> Path:
    """A copy of a shipped unit whose ExecStart= runs this venv's wa-watchdog (verify needs the binary to exist)."""
    copy = into / unit.name
    copy.write_text(unit.read_text(encoding="utf-8").replace(SHIPPED_BINARY, str(VENV_BINARY)), encoding="utf-8")
    return copy


@pytest.mark.parametrize("name,command", [("wa-watchdog.service", " run --config "),
                                          ("wa-bridge@.service", " bridge --account %i --config ")])
def test_units_carry_the_required_directives(name: str, command: str) -> None:
    d = directives(UNITS / name)
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"] and "2" in d["RestartPreventExitStatus"][0].split()
    assert d["KillMode"] == ["control-group"]
    assert float(d["WatchdogSec"][0].removesuffix("s")) > 0 and d["TimeoutStopSec"]
    (exec_start,) = d["ExecStart"]
    assert exec_start.startswith(SHIPPED_BINARY + command)
    assert d["UMask"] == ["0027"] and d["StateDirectoryMode"] == ["0750"]  # nothing for other local users


def test_venv_copies_verify_without_a_word(tmp_path: Path) -> None:
    assert VENV_BINARY.is_file(), f"{VENV_BINARY} missing: install the package into the venv (pip install -e .)"
    copies = [with_venv_binary(UNITS / name, tmp_path) for name in ("wa-watchdog.service", "wa-bridge@.service")]
    instance = tmp_path / "wa-bridge@listener.service"
    shutil.copy(copies[1], instance)
    assert verify(*copies, instance, cwd=tmp_path) == ""


def test_shipped_units_verify_byte_for_byte(tmp_path: Path) -> None:
    """The files exactly as shipped, with /opt/wa-watchdog provided by a private mount namespace."""
    script = (f"mount -t tmpfs tmpfs /opt && mkdir -p {Path(SHIPPED_BINARY).parent} && "
              f"ln -s {VENV_BINARY} {SHIPPED_BINARY} && "
              f"systemd-analyze verify {UNITS / 'wa-watchdog.service'} {UNITS / 'wa-bridge@.service'} 2>&1; "
              f"echo exit=$?")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0 and "exit=" not in done.stdout:
        pytest.skip(f"unshare -m is not permitted here: {done.stderr.strip()}")
    assert done.stdout.strip() == "exit=0", done.stdout


def test_the_check_can_fail(tmp_path: Path) -> None:
    """A misspelt key exits 0 but prints a warning: the no-output check must catch it."""
    unit = with_venv_binary(UNITS / "wa-watchdog.service", tmp_path)
    unit.write_text(unit.read_text(encoding="utf-8").replace("WatchdogSec=", "WatchdogSecs="), encoding="utf-8")
    assert "WatchdogSecs" in verify(unit, cwd=tmp_path)
