"""A stand-in for the Next.js web app: a plain HTTP server that knows nothing of sd_notify or the watchdog.

It listens only after `--listen-after` seconds (so readiness must come from
the HTTP check, not from the spawn), answers GET /healthz 200, and while
`--hang-file` exists its single request thread blocks (a deadlocked server:
alive, not stopped, just never answering).
"""
from __future__ import annotations

import argparse
import http.server
import os
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--listen-after", type=float, default=0.0)
    parser.add_argument("--hang-file", type=Path)
    args = parser.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            while args.hang_file and args.hang_file.exists():
                time.sleep(0.05)
            body = b"ok\n" if self.path == "/healthz" else b"web app\n"
            self.send_response(200 if self.path in ("/", "/healthz") else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *values: object) -> None:
            pass

    time.sleep(args.listen_after)
    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    print(f"web app pid {os.getpid()} listening on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
