"""`wa-watchdog bridge` and `wa-watchdog pair` on neonize accounts as real processes with the real neonize
(this machine has no route to WhatsApp), and the pairing flow with only neonize's Go library replaced."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from neonize.client import NewClient
from neonize.proto import Neonize_pb2 as nz

from bridge.pairing import Pairing, format_code
from bridge.session_lock import SessionLock
from bridge.schema import open_readonly, parse_ts
from bridge.transports.neonize_account import session_database
from bridge.transports.neonize_session import linked_device
from tests.bridge_support import bridge_url, health
from tests.conftest import ROOT, Processes, wait_until
from tests.neonize_support import NEONIZE_CONFIG, PHONE, FakeGo, link_session, talking_to
from watchdog.components import Config, load
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_NEEDS_OPERATOR, EXIT_OK, EXIT_SESSION_HELD


@pytest.fixture
def config_path(write_config) -> Path:
    return write_config(NEONIZE_CONFIG)


@pytest.fixture
def config(config_path: Path) -> Config:
    return load(config_path)


# whatsmeow dials through $HTTPS_PROXY (Go's ProxyFromEnvironment, read when the library loads): a closed local
# port is "no network" for certain, and these tests can never reach WhatsApp with the fake session's keys.
NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9"}


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out or b"").decode() + (err or b"").decode()


@pytest.mark.slow
def test_bridge_on_an_unpaired_session_exits_for_an_operator(procs: Processes, config: Config) -> None:
    code, output = finish(procs.start("bridge", "--account", "main"))
    assert code == EXIT_NEEDS_OPERATOR, output
    assert f"wa-watchdog pair --account main --phone {PHONE}" in output
    assert not Path(session_database(config.account("main"))).exists()


@pytest.mark.slow
def test_bridge_without_network_stays_up_unhealthy_and_retrying(procs: Processes, config: Config,
                                                                 data_dir: Path) -> None:
    account = config.account("main")
    link_session(Path(session_database(account)))
    proc = procs.start("bridge", "--account", "main", env=NO_NETWORK, stdout=subprocess.DEVNULL,
                       stderr=open(data_dir.parent / "bridge.log", "wb"))
    url = wait_until(lambda: bridge_url(data_dir, proc), timeout=20, message="the bridge API")

    def failed_three_times() -> list | None:
        with open_readonly(account.store) as conn:
            rows = conn.execute("SELECT at, kind, reason FROM connection_events ORDER BY id").fetchall()
        return rows if len(rows) >= 3 else None

    rows = wait_until(failed_three_times, timeout=20, message="three failed connects recorded")[:3]
    assert {kind for _, kind, _ in rows} == {"connect_failed"}
    assert all(reason.startswith("cannot connect to WhatsApp: ") and "127.0.0.1:9" in reason for _, _, reason in rows)
    at = [parse_ts(when) for when, _, _ in rows]
    gaps = [(b - a).total_seconds() for a, b in zip(at, at[1:])]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps  # tenacity waits 0.5 s, then 1 s (+ jitter): backing off
    body = health(url)
    assert (body["status"], body["state"], body["connected"]) == ("unavailable", "disconnected", False)
    assert body["reason"].startswith("cannot connect to WhatsApp: ") and body["open_window"] is not None
    assert proc.poll() is None  # alive: an outage is not a crash (no restart loop)


@pytest.mark.slow
def test_pair_without_network_fails_clearly(procs: Processes) -> None:
    code, output = finish(procs.start("pair", "--account", "main", "--phone", PHONE, env=NO_NETWORK))
    assert code == EXIT_ERROR and "cannot reach WhatsApp to pair" in output, output


@pytest.mark.slow
def test_pair_on_a_paired_session_has_nothing_to_do(procs: Processes, config: Config) -> None:
    link_session(Path(session_database(config.account("main"))))
    code, output = finish(procs.start("pair", "--account", "main"))
    assert code == EXIT_OK and "already paired (device 27710000000:7@s.whatsapp.net" in output, output


@pytest.mark.slow
def test_pair_refuses_a_held_session_and_a_wrong_phone(procs: Processes, config: Config) -> None:
    code, output = finish(procs.start("pair", "--account", "main", "--phone", "27719999999"))
    assert code == EXIT_CONFIG and "must be the account's number 27710000000" in output
    lock = SessionLock(config.account("main").session_dir)
    try:
        code, output = finish(procs.start("pair", "--account", "main"))
    finally:
        lock.release()
    assert code == EXIT_SESSION_HELD and "is held by pid" in output, output


def pairing_with(fake: FakeGo, config: Config, phone: str | None) -> tuple[Pairing, threading.Thread, list[int]]:
    account = config.account("main")
    account.session_dir.mkdir(parents=True, exist_ok=True)
    pairing = Pairing(account, phone, client_factory=lambda database, uuid: talking_to(
        fake, NewClient(database, uuid=uuid, new_device=True)), timeout=20)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(pairing.run()))
    thread.start()
    return pairing, thread, result


def test_pairing_code_flow(config: Config, capsys: pytest.CaptureFixture) -> None:
    fake = FakeGo()
    fake.qr_codes = [b"2@unpaired-ref,noise,identity,adv"]
    _, thread, result = pairing_with(fake, config, PHONE)
    wait_until(lambda: fake.pair_requests, message="a pairing code request")
    (request,) = fake.pair_requests
    assert (request.phone, request.showPushNotification) == (PHONE, True)
    wait_until(lambda: "PAIRING CODE: ABCD-EFGH" in capsys.readouterr().out or None, message="the code printed")
    fake.emit(nz.PairStatus(Status=nz.PairStatus.SUCCESS,
                            ID=nz.JID(User=PHONE, Device=7, Server="s.whatsapp.net", RawAgent=0, Integrator=0,
                                      IsEmpty=False)))
    fake.emit(nz.Connected(status=True))
    thread.join(10)
    assert result == [EXIT_OK]
    assert "paired: account 'main' is linked" in capsys.readouterr().out


def test_qr_flow_and_a_refused_pairing(config: Config, capsys: pytest.CaptureFixture) -> None:
    fake = FakeGo()
    fake.qr_codes = [b"2@unpaired-ref,noise,identity,adv"]
    _, thread, result = pairing_with(fake, config, None)
    wait_until(fake.running.is_set, message="the session to start")
    fake.emit(nz.PairStatus(Status=nz.PairStatus.ERROR, Error="phone refused"))
    thread.join(10)
    captured = capsys.readouterr()
    assert result == [EXIT_ERROR] and "pairing failed: phone refused" in captured.err
    assert "scan with WhatsApp" in captured.out and any(block in captured.out for block in "█▀▄")
    assert fake.pair_requests == []
    assert linked_device(config.account("main")) is None


@pytest.mark.slow
def test_the_simulator_path_never_loads_neonize() -> None:
    code = ("import sys, bridge.main, bridge.transports.sim, watchdog.cli; "
            "sys.exit(any(name.startswith('neonize') for name in sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_format_code() -> None:
    assert format_code("abcdefgh") == format_code("ABCD-EFGH") == "ABCD-EFGH"
