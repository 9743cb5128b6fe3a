"""`wa-watchdog check`: one line per check, exit 1 naming what is wrong with an installation."""
from __future__ import annotations

import base64
import hashlib
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, ROOT, Processes, wait_until
from tests.bridge_support import health
from tests.monitor_support import cli
from watchdog.shared import endpoints


def _unit(unit_dir: Path, config: Path) -> None:
    unit_dir.mkdir(exist_ok=True)
    (unit_dir / "wa-watchdog.service").write_text(
        f"[Service]\nExecStart=/opt/wa-watchdog/.venv/bin/wa-watchdog run --config {config}\n", encoding="utf-8")


def _lines(output: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in output.splitlines()[:-1]:
        level, what, *_ = line.split()
        found.setdefault(what if what != "data" else "data dir", []).append(level)
    return found


def test_a_ready_installation_passes(write_config, tmp_path: Path) -> None:
    config = write_config()
    config.chmod(0o640)
    (tmp_path / "data").mkdir(mode=0o750)
    _unit(tmp_path / "units", config)
    done = cli(config, "check", "--unit-dir", str(tmp_path / "units"))
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == "ready"
    levels = _lines(done.stdout)
    assert levels["config"] == ["ok"] and levels["data dir"] == ["ok"] and levels["unit"] == ["ok"]
    assert levels["session"] == ["ok"]  # sim: nothing to pair


@pytest.mark.slow
def test_each_problem_is_named(write_config, tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        config = write_config(BASE_CONFIG.replace('transport = "sim"', 'transport = "neonize"').replace(
            "api_port = 0", f'api_port = {port}\napi_token = "t0k3n{port}"'))
        config.chmod(0o644)
        _unit(tmp_path / "units", tmp_path / "other.toml")
        done = cli(config, "check", "--unit-dir", str(tmp_path / "units"))
    finally:
        holder.close()
    assert done.returncode == 1
    out = done.stdout
    assert f"{config} is readable by every user (mode 0644) and holds secrets (accounts.main.api_token)" in out
    assert f"FAIL  data dir  {tmp_path / 'data'} does not exist: install -d -o wa-watchdog -g wa-watchdog -m 0750" in out
    assert f"FAIL  port      127.0.0.1:{port} (accounts.main.api_port) is in use by another program" in out
    assert "FAIL  session   main (27710000000) is not paired: wa-watchdog pair --account main --phone 27710000000" in out
    assert f"FAIL  unit      {tmp_path / 'units' / 'wa-watchdog.service'} starts " in out and "not with --config" in out
    assert out.splitlines()[-1] == "4 problem(s)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_ports_held_by_the_running_watchdog_are_fine(write_config, tmp_path: Path) -> None:
    control, api_port = _free_port(), _free_port()
    config = write_config(BASE_CONFIG.replace("control_port = 0", f"control_port = {control}").replace(
        "api_port = 0", f"api_port = {api_port}"))
    config.chmod(0o640)
    procs = Processes(config)
    try:
        procs.start("run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = wait_until(lambda: endpoints.url(tmp_path / "data", "bridge:main"), 30, message="the bridge to serve")
        wait_until(lambda: isinstance(health(api).get("groups"), list), 30, message="WhatsApp to list the groups")
        done = cli(config, "check", "--unit-dir", str(tmp_path / "units"))
    finally:
        procs.stop_all()
    assert done.returncode == 0, done.stdout
    assert "ok    groups    account main is in every followed group (2)" in done.stdout  # asked the running bridge
    for key, port in (("watchdog.control_port", control), ("accounts.main.api_port", api_port)):
        assert f"ok    port      127.0.0.1:{port} ({key}) is in use: the running wa-watchdog holds this data " \
               "directory" in done.stdout


def _tree(root: Path) -> dict[str, tuple]:
    """Everything under `root`, byte for byte: type, mode, owner, mtime and content of each entry."""
    found: dict[str, tuple] = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_mtime_ns, info.st_size, content)
    return found


def test_check_writes_nothing(tmp_path: Path) -> None:
    """Before the data directory exists and in an installed one with a paired neonize session: the tree is the
    same byte for byte after the check (no data dir, no session dir, no lock, no -wal/-shm)."""
    from tests.neonize_support import NEONIZE_CONFIG, link_session
    config = tmp_path / "wa.toml"
    config.write_text(NEONIZE_CONFIG, encoding="utf-8")
    config.chmod(0o640)
    before = _tree(tmp_path)
    missing = cli(config, "check", "--unit-dir", str(tmp_path / "units"))
    assert f"FAIL  data dir  {tmp_path / 'data'} does not exist" in missing.stdout
    assert "Traceback" not in missing.stderr
    assert _tree(tmp_path) == before

    session = tmp_path / "data/accounts/main/session"
    link_session(session / "neonize.db")
    for suffix in ("-wal", "-shm"):
        session.joinpath("neonize.db" + suffix).unlink(missing_ok=True)
    before = _tree(tmp_path)
    ready = cli(config, "check", "--unit-dir", str(tmp_path / "units"))
    assert "ok    session   main: paired as 27710000000:7@s.whatsapp.net" in ready.stdout, ready.stdout
    assert _tree(tmp_path) == before


def test_only_a_config_that_holds_secrets_is_warned_about(write_config, tmp_path: Path) -> None:
    demo = write_config((ROOT / "conf/demo.toml").read_text(encoding="utf-8"), name="demo.toml")
    demo.chmod(0o644)
    done = cli(demo, "check", "--data-dir", str(tmp_path / "data"), "--unit-dir", str(tmp_path / "units"))
    assert "holds secrets" not in done.stdout + done.stderr, done.stdout  # the demo holds none
    secret = 'whsec_' + base64.b64encode(b"k" * 32).decode()
    webhook = f'\n[[webhooks]]\nname = "app"\nurl = "http://127.0.0.1:3005/hook"\nsecret = "{secret}"\n'
    config = write_config(BASE_CONFIG.replace("api_port = 0\n", 'api_port = 0\napi_token = "4f1c9e"\n', 1)
                          + '[drops_api]\nenabled = true\n' + webhook
                          + '[[alerts]]\nurl = "https://hooks.slack.com/services/T01/B02/c3d4"\nformat = "slack"\n'
                          + '[database]\nurl = "postgresql://wa:pw@127.0.0.1/wa"\n'
                          + '[[programs]]\nname = "web"\nargv = ["/bin/true"]\n'
                          + 'env = { NODE_ENV = "production", DB_PASSWORD = "hunter2" }\n')
    config.chmod(0o644)
    done = cli(config, "check", "--unit-dir", str(tmp_path / "units"))
    assert (f"warn  config    {config} is readable by every user (mode 0644) and holds secrets "
            "(accounts.main.api_token, database.url, webhooks[0].secret, alerts[0].url, programs[0].env.DB_PASSWORD): "
            f"chown root:wa-watchdog {config} && chmod 0640 {config}") in done.stdout, done.stdout


def test_placeholders_and_missing_media_dirs_are_named(write_config, tmp_path: Path) -> None:
    config = write_config(BASE_CONFIG.replace("api_port = 0\n", 'api_port = 0\nmedia_dirs = ["media", "/srv/none"]\n', 1)
                          + '[[alerts]]\nurl = "https://hooks.slack.com/services/REPLACE/ME"\nformat = "slack"\n'
                          + '[[alerts]]\nurl = "https://alerts.example.com/hook"\n')
    config.chmod(0o640)
    (tmp_path / "data/media").mkdir(parents=True)
    done = cli(config, "check", "--unit-dir", str(tmp_path / "units"))
    assert done.returncode == 1
    out = done.stdout
    assert ("FAIL  config    alerts[0].url = 'https://hooks.slack.com/services/REPLACE/ME' is the example's "
            "placeholder: nothing would arrive there; set the real URL") in out
    assert "FAIL  config    alerts[1].url = 'https://alerts.example.com/hook' is the example's placeholder" in out
    assert f"ok    media     {tmp_path / 'data/media'} (accounts.main.media_dirs[0])" in out
    assert ("FAIL  media     /srv/none (accounts.main.media_dirs[1]) does not exist: files to send are read "
            "from it") in out
    assert "holds secrets" not in out  # a placeholder is no secret
    assert out.splitlines()[-1] == "3 problem(s)"


@pytest.mark.parametrize("table, key, problem", [
    ('api_host = "0.0.0.0"\n', "accounts.main.api_token", "required when api_host is not loopback (0.0.0.0)"),
    ('api_host = "0.0.0.0"\napi_token = "  "\n', "accounts.main.api_token", "'  ' is a placeholder, not a token"),
    ('api_token = "CHANGEME"\n', "accounts.main.api_token", "'CHANGEME' is a placeholder, not a token"),
    ('api_token = "xxxxxxxx"\n', "accounts.main.api_token", "'xxxxxxxx' is a placeholder, not a token"),
])
def test_a_missing_or_placeholder_token_is_a_config_error(write_config, table: str, key: str, problem: str) -> None:
    config = write_config(BASE_CONFIG.replace("api_port = 0\n", "api_port = 0\n" + table, 1))
    done = cli(config, "check")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"wa-watchdog check: configuration error: {config}: {key}: {problem}"), done.stderr
