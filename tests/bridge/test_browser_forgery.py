"""A real headless Chromium opens a page of another origin on the same host, and that page tries every
request a browser lets it make without asking the bridge first (form posts, a no-cors text/plain fetch, a
form from a sandboxed frame: Origin null) plus a JSON fetch that needs a preflight. Each attempt reports to
the page's own server once the bridge answered it; WhatsApp must receive nothing."""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.bridge_support import health, sent, start_bridge, start_sim
from tests.conftest import GROUP_A, Processes, wait_until

CHROMIUM = os.environ.get("WA_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ATTEMPTS = ("form-text", "form-urlencoded", "fetch-no-cors", "sandboxed-form", "fetch-json-preflight")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")]


def attack_page(bridge: str, page_url: str) -> str:
    body = f'{{"recipient": "{GROUP_A}", "message": "sent by a web page"}}'
    def form(enctype: str, frame: str) -> str:  # the classic trick: field name + "=" + value reads as JSON
        return (f'<form method="post" action="{bridge}/api/send" enctype="{enctype}" target="{frame}">'
                f'<input name=\'{body[:-1]}, "x": "\' value=\'"}}\'></form>')
    sandboxed = ("<iframe name='inner' onload=\"if (this.dataset.sent) fetch('" + page_url +
                 "/report?what=sandboxed-form', {mode: 'no-cors'})\"></iframe>"
                 "<form method='post' action='" + bridge + "/api/send' enctype='text/plain' target='inner'>"
                 "<input name='{\"recipient\": \"" + GROUP_A + "\", \"message\": \"x\", \"y\": \"' value='\"}'></form>"
                 "<script>document.querySelector('iframe').dataset.sent = 1; document.forms[0].submit()</script>")
    return f"""<!doctype html><html><body>
<iframe name="f1" onload="seen('form-text')"></iframe><iframe name="f2" onload="seen('form-urlencoded')"></iframe>
{form("text/plain", "f1")}{form("application/x-www-form-urlencoded", "f2")}
<iframe sandbox="allow-forms allow-scripts" srcdoc="{sandboxed.replace('"', '&quot;')}"></iframe>
<script>
const once = new Set();
function seen(what) {{ if (!once.has(what)) {{ once.add(what); fetch('/report?what=' + what); }} }}
document.forms[0].submit(); document.forms[1].submit();
fetch('{bridge}/api/send', {{method: 'POST', mode: 'no-cors', body: '{body}'}}).then(() => seen('fetch-no-cors'));
fetch('{bridge}/api/send', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: '{body}'}})
  .catch(() => seen('fetch-json-preflight'));
</script></body></html>"""


@pytest.mark.slow
def test_a_page_of_another_origin_cannot_send_through_the_bridge(procs: Processes, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, bridge = start_bridge(procs, data_dir)
    reports: list[str] = []
    page = b""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            parts = urlsplit(self.path)
            if parts.path == "/report":
                reports.append(parse_qs(parts.query)["what"][0])
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page if parts.path == "/" else b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    page = attack_page(bridge, f"http://127.0.0.1:{server.server_address[1]}").encode()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                                f"http://127.0.0.1:{server.server_address[1]}/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # every attempt reached the bridge (or its preflight did) and the page heard back
        wait_until(lambda: set(reports) == set(ATTEMPTS), 60, 0.1, f"the page to report {ATTEMPTS}")
    finally:
        os.killpg(browser.pid, signal.SIGTERM)  # Chromium's own helper processes are in its session
        browser.wait(timeout=10)
        server.shutdown()
    assert sent(sim) == [] and health(bridge)["outbox_depth"] == 0
