"""`wa-watchdog pair --account NAME [--phone 27710000000]`: link an account's neonize session to its phone.

With --phone it prints `PAIRING CODE: XXXX-XXXX` (WhatsApp > Linked devices >
Link with phone number instead); without, a QR code in the terminal (rotated by
WhatsApp every ~20 s). It exits 0 once WhatsApp confirmed the pairing and the
first login on the new session succeeded. It holds the bridge's session lock,
so it never runs beside a bridge on the same session (exit 3, as a second
bridge would).
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable

from bridge.session_lock import SessionHeld, SessionLock
from bridge.config import PHONE, AccountConfig
from watchdog.components import Config
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, EXIT_SESSION_HELD

PAIR_TIMEOUT = 300.0  # WhatsApp stops issuing QR codes after a few minutes; a pairing code is valid as long
CONNECTED_WAIT = 30.0  # after the pairing: the first login on the new session
POLL = 0.1


def format_code(code: str) -> str:
    """WhatsApp's 8-character linking code as the phone shows it: XXXX-XXXX."""
    bare = code.replace("-", "").strip().upper()
    return f"{bare[:4]}-{bare[4:]}" if len(bare) == 8 else code


def cmd_pair(config: Config, args: argparse.Namespace) -> int:
    account = config.account(args.account)
    phone = args.phone
    if account.transport != "neonize":
        print(f"wa-watchdog pair: account {account.name!r} uses transport {account.transport!r}; "
              "only neonize accounts are paired", file=sys.stderr)
        return EXIT_CONFIG
    if phone is not None and (not PHONE.match(phone) or phone != account.phone):
        print(f"wa-watchdog pair: --phone {phone!r} must be the account's number {account.phone} "
              "(digits with country code)", file=sys.stderr)
        return EXIT_CONFIG

    try:
        lock = SessionLock(account.session_dir)
    except SessionHeld as exc:
        print(f"wa-watchdog pair: {exc}; stop that bridge first", file=sys.stderr)
        return EXIT_SESSION_HELD
    try:
        from bridge.transports.neonize_account import session_database
        from bridge.transports.neonize_session import SessionStoreError, linked_device
        try:
            device = linked_device(account)
        except SessionStoreError as exc:
            print(f"wa-watchdog pair: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if device is not None:
            print(f"account {account.name!r} is already paired (device {device.User}:{device.Device}@{device.Server} "
                  f"in {session_database(account)}); nothing to do")
            return EXIT_OK
        return Pairing(account, phone).run()
    finally:
        lock.release()


def _new_client(database: str, phone: str) -> object:
    from neonize.client import NewClient
    return NewClient(database, uuid=phone, new_device=True)


class Pairing:
    """One pairing attempt: neonize's client connects unpaired, we show a code or QR, WhatsApp confirms."""

    def __init__(self, account: AccountConfig, phone: str | None,
                 client_factory: Callable[[str, str], object] = _new_client,
                 timeout: float = PAIR_TIMEOUT) -> None:
        from bridge.transports.neonize_session import prepare_session
        self.account = account
        self.phone = phone
        self.database = prepare_session(account)
        self.timeout = timeout
        self.client = client_factory(self.database, account.phone)
        self.paired = threading.Event()
        self.connected = threading.Event()
        self.code_requested = threading.Event()
        self.problem = ""
        self._ended = threading.Event()

    def run(self) -> int:
        from neonize.events import ConnectedEv, PairStatusEv
        self.client.event(PairStatusEv)(self._on_pair_status)
        self.client.event(ConnectedEv)(self._on_connected)
        self.client.event.qr(self._on_qr)
        print(f"pairing account {self.account.name!r} ({self.account.phone}); session store {self.database}",
              flush=True)
        worker = threading.Thread(target=self._connect, name="neonize-pair", daemon=True)
        worker.start()
        deadline = time.monotonic() + self.timeout
        while not (self.paired.is_set() or self.problem or self._ended.is_set()):
            if time.monotonic() > deadline:
                self.problem = f"not paired within {self.timeout:.0f}s"
                break
            time.sleep(POLL)
        if self.paired.is_set() and not self.connected.wait(CONNECTED_WAIT):
            print(f"paired, but the first login did not complete within {CONNECTED_WAIT:.0f}s; "
                  "the bridge will log in on its start", flush=True)
        self.client.stop()
        worker.join(10)
        if self.paired.is_set():
            print(f"paired: account {self.account.name!r} is linked; start its bridge", flush=True)
            return EXIT_OK
        print(f"wa-watchdog pair: {self.problem or 'the session ended before pairing'}", file=sys.stderr)
        return EXIT_ERROR

    def _connect(self) -> None:
        from neonize.exc import NeonizeError
        try:
            self.client.connect()
        except NeonizeError as exc:
            self.problem = f"cannot reach WhatsApp to pair: {exc}"
        finally:
            self._ended.set()

    # -- neonize callbacks (its Go thread) -------------------------------------------------------------

    def _on_qr(self, _client: object, data: bytes) -> None:
        if self.phone is None:
            import segno
            print("scan with WhatsApp > Linked devices > Link a device (the code changes every ~20 s):", flush=True)
            segno.make_qr(data).terminal(out=sys.stdout, compact=True)
            sys.stdout.flush()
        elif not self.code_requested.is_set():
            self.code_requested.set()
            threading.Thread(target=self._request_code, name="neonize-pair-code", daemon=True).start()

    def _request_code(self) -> None:
        from neonize.exc import PairPhoneError
        try:
            code = self.client.PairPhone(self.phone, show_push_notification=True)
        except PairPhoneError as exc:
            self.problem = f"WhatsApp refused a pairing code for {self.phone}: {exc}"
            return
        print(f"PAIRING CODE: {format_code(code)}", flush=True)
        print("enter it on the phone: WhatsApp > Linked devices > Link a device > Link with phone number instead",
              flush=True)

    def _on_pair_status(self, _client: object, event: object) -> None:
        from neonize.proto.Neonize_pb2 import PairStatus
        if event.Status == PairStatus.SUCCESS:  # type: ignore[attr-defined]
            print(f"WhatsApp confirmed the pairing ({event.ID.User}:{event.ID.Device}@{event.ID.Server})",  # type: ignore[attr-defined]
                  flush=True)
            self.paired.set()
        else:
            self.problem = f"pairing failed: {event.Error or 'no reason given'}"  # type: ignore[attr-defined]

    def _on_connected(self, _client: object, _event: object) -> None:
        self.connected.set()
