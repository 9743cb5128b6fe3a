"""docs/OPERATIONS.md's first deployment, step by step in a scratch root, as a non-root service user.

The service user is `nobody` (a throwaway user would need useradd/userdel on the
host). The interpreter of these machines lives under /root (0700), so the user
keeps CAP_DAC_READ_SEARCH (it may read and traverse everything) and nothing
else: every write is checked as `nobody`, which is what the steps are about.
Pairing runs in a network namespace of its own: it gets as far as dialling
WhatsApp (unreachable there), after the data directory and the session.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NOBODY = 65534
AS_SERVICE_USER = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--init-groups",
                   "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")


def _as_service_user(*args: str, netns: bool = False) -> subprocess.CompletedProcess:
    wrap = (("unshare", "-n") if netns else ()) + AS_SERVICE_USER
    return subprocess.run([*wrap, sys.executable, "-m", "watchdog.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("unshare") is None:
        pytest.skip("needs root with setpriv and unshare to act as a service user in a scratch root")
    if _as_service_user("--version").returncode != 0:
        pytest.skip("the service user cannot run this interpreter here, even with CAP_DAC_READ_SEARCH")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("no network namespaces here (unshare -n)")
    root = tmp_path / "root"
    for folder in ("etc", "var/lib"):
        (root / folder).mkdir(parents=True)
    return root


def _install_config(scratch_root: Path) -> tuple[Path, Path]:
    """conf/prod.example.toml installed as docs/OPERATIONS.md says, with free ports; returns it and the data dir."""
    data = scratch_root / "var/lib/wa-watchdog"
    etc = scratch_root / "etc/wa-watchdog"
    config = etc / "config.toml"
    prod = (ROOT / "conf/prod.example.toml").read_text(encoding="utf-8")
    prod = prod.replace('"/var/lib/wa-watchdog"', f'"{data}"').replace("control_port = 8090", "control_port = 0").replace("port = 8091", "port = 0") \
        .replace("api_port = 8080 ", "api_port = 0 ")
    # install -d -m 0750 -o root -g wa-watchdog /etc/wa-watchdog; install -m 0640 -o root -g wa-watchdog ... config.toml
    etc.mkdir(mode=0o750)
    os.chown(etc, 0, NOBODY)
    config.write_text(prod, encoding="utf-8")
    os.chown(config, 0, NOBODY)
    config.chmod(0o640)
    return config, data


@pytest.mark.slow
def test_the_documented_install_pairs_before_the_first_start(scratch_root: Path) -> None:
    config, data = _install_config(scratch_root)

    # Without the data directory step (what the old docs did: StateDirectory= makes it only at the first start).
    early = _as_service_user("pair", "--account", "main", "--config", str(config))
    assert early.returncode == 2
    assert early.stderr.strip() == (f"wa-watchdog pair: data directory {data} does not exist and cannot be created: "
                                    f"Permission denied; create it first (as root): install -d -o nobody -g nogroup "
                                    f"-m 0750 {data}")

    # install -d -o wa-watchdog -g wa-watchdog -m 0750 /var/lib/wa-watchdog
    data.mkdir(mode=0o750)
    os.chown(data, NOBODY, NOBODY)
    checked = _as_service_user("check", "--config", str(config), "--unit-dir", str(scratch_root / "etc/systemd"))
    assert f"ok    config    {config}: valid" in checked.stdout
    assert f"ok    data dir  {data}: writable, mode 0750, owner nobody" in checked.stdout
    assert "FAIL  session   main (27710000000) is not paired" in checked.stdout  # what pairing is for
    assert checked.returncode == 1

    paired = _as_service_user("pair", "--account", "main", "--config", str(config), netns=True)
    assert paired.returncode == 1, paired.stderr
    assert f"session store {data}/accounts/main/session/neonize.db" in paired.stdout
    assert "wa-watchdog pair: cannot reach WhatsApp to pair" in paired.stderr and "Traceback" not in paired.stderr
    session = data / "accounts/main/session"
    for path in (session, session / "session.lock", session / "neonize.db"):
        assert path.stat().st_uid == NOBODY, path  # the service user's, as the unit will run it


def _as_root(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow
def test_check_before_the_data_dir_creates_nothing_and_what_root_made_is_named(scratch_root: Path) -> None:
    """An older release's root `check` made accounts/main/session as root; `install -d` fixed only the top.
    Now no check creates anything (as root or as the service user), the service user's `pair` names the
    directory it cannot use (no traceback), `check` names it with the chown, and root refuses to write there."""
    config, data = _install_config(scratch_root)
    units = str(scratch_root / "etc/systemd")
    for run in (_as_root, _as_service_user):
        checked = run("check", "--config", str(config), "--unit-dir", units)
        assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr
        assert f"FAIL  data dir  {data} does not exist" in checked.stdout
        assert not data.exists()

    data.mkdir(mode=0o750)
    os.chown(data, NOBODY, NOBODY)
    session = data / "accounts/main/session"
    session.mkdir(parents=True, mode=0o700)  # root's, as the old check left it
    paired = _as_service_user("pair", "--account", "main", "--config", str(config), netns=True)
    assert paired.returncode == 2 and "Traceback" not in paired.stderr, paired.stderr
    assert paired.stderr.strip() == (f"wa-watchdog pair: session directory {session} cannot be used by nobody: "
                                     f"Permission denied ({session}/session.lock); it must belong to the user the "
                                     f"service runs as (as root: chown -R nobody: {session})")
    checked = _as_service_user("check", "--config", str(config), "--unit-dir", units)
    assert (f"FAIL  data dir  account main: {data}/accounts (root), {data}/accounts/main (root), {session} (root) "
            f"not owned by nobody, who owns "
            f"the data directory: chown -R nobody: {data}/accounts") in checked.stdout, checked.stdout

    as_root = _as_root("pair", "--account", "main", "--config", str(config))
    assert as_root.returncode == 2
    assert as_root.stderr.strip().startswith(f"wa-watchdog pair: data_dir {data} belongs to nobody, not root")
    assert not (session / "session.lock").exists()
