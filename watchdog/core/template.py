"""`python -m watchdog.core.template FD WATCHDOG_PID PRELOAD ROOM`: the pre-loaded template our components are forked from.

A fork server (as Android's zygote or multiprocessing's forkserver): this
process imports once what every component needs (the entry point and the
comma-separated modules PRELOAD, which the product's slices name: the core
names none; watchdog/components.py), then waits on the socket
`FD` from the watchdog (watchdog/core/forkserver.py) for spawn requests. Each
request carries the child's argv, environment and working directory and,
as SCM_RIGHTS, the write end of its output pipe. The template forks twice:
the intermediate process exits at once, so the child is reparented to the
watchdog (a child subreaper) and is the watchdog's own child, which it
reaps with waitpid and watches by pidfd exactly as an exec'd one.

Fork safety: the template never starts a thread, an event loop, a database
or a socket besides its one to the watchdog (checked before every fork);
`gc.freeze()` after the imports keeps the collector from writing to (and so
un-sharing) the pages of imported code. Which commands may be forked is
each command's own word (`Command.fork`, declared by its slice): anything
else is answered `exec`, and the watchdog starts it the old way (a bridge on
neonize, which starts a Go runtime and is never imported here, or a bridge's
warm standby: bridge/forking.py).

ROOM is padding in the template's own argv: the child writes its argv over
it, so /proc/<pid>/cmdline (ps, psutil, the leftover check in
watchdog/core/stale.py) shows the component's command line, not the template's.
"""
from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence

OUR_COMMAND = ("-m", "watchdog.cli")
ENTRY = OUR_COMMAND[1]  # imported by name, as the exec'd child would: the entry point composes the product
ARGV_ROOM = 4096  # bytes of the padding argument; a child whose argv needs more is started by exec
MAX_MESSAGE = 1 << 20  # one request: argv + environment as JSON
PR_SET_PDEATHSIG = 1


def send(sock: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
    """One JSON datagram (SOCK_SEQPACKET keeps message boundaries), with file descriptors."""
    socket.send_fds(sock, [json.dumps(message).encode()], list(fds))


def receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """The next message and the descriptors that came with it; (None, []) when the other end closed."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4)
    if not data:
        return None, fds
    return json.loads(data), fds


def is_ours(argv: Sequence[str], executable: str = sys.executable) -> bool:
    """`<this python> -m watchdog.cli <command> ...`: one of our own components, which the template can run."""
    return len(argv) > 3 and argv[0] == executable and tuple(argv[1:3]) == OUR_COMMAND


def exec_reason(argv: Sequence[str]) -> str:
    """Why `argv` must be started by exec rather than forked from here; "" if it can be forked."""
    if not is_ours(argv):
        return "not one of our own components"
    if len("\0".join(argv)) + 1 > ARGV_ROOM:
        return f"its command line is longer than {ARGV_ROOM} bytes"
    entry = importlib.import_module(ENTRY)
    command = entry.COMMANDS.get(argv[3])  # each a watchdog.shared.component.Command, declared by its slice
    if command is None or command.fork is None:
        return f"`{argv[3]}` is not pre-loaded"
    if not command.fork:
        return ""
    try:
        args = entry.build_parser().parse_args(list(argv[3:]))
    except SystemExit:
        return "its command line does not parse (the component reports why)"
    from watchdog.shared.component import resolve
    reason: str = resolve(command.fork)(args)
    return reason


def preload(modules: Sequence[str]) -> None:
    for name in (ENTRY, "watchdog.shared.config", *modules):
        importlib.import_module(name)
    from watchdog.shared import logs
    sys.modules[ENTRY].build_parser()  # cached: a forked child parses its argv with it, not building 16 sub-parsers
    logs.preload()
    gc.collect()
    gc.freeze()  # imported objects move out of the collector's reach: it will not touch (copy) their pages


def set_cmdline(argv: Sequence[str]) -> bool:
    """Write `argv` over this process's own argument area (the template's padding), as /proc shows it."""
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    arg_start, arg_end = int(fields[45]), int(fields[46])  # stat fields 48 and 49
    data = b"\0".join(a.encode() for a in argv) + b"\0"
    if len(data) > arg_end - arg_start:
        return False
    ctypes.memmove(arg_start, data.ljust(arg_end - arg_start, b"\0"), arg_end - arg_start)
    return True


class Request:
    """What the child runs once it is forked: argv, environment, working directory, output pipe."""

    def __init__(self, message: dict, output: int) -> None:
        self.argv: list[str] = message["argv"]
        self.env: dict[str, str] = message["env"]
        self.cwd: str | None = message.get("cwd")
        self.output = output


def fork(sock: socket.socket, request: Request) -> bool:
    """Fork the child (twice); True in the child, False in the template once the child's pid is sent."""
    report_r, report_w = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:  # exits at once, so the child is orphaned to the watchdog (its subreaper)
        child = -1
        try:
            child = os.fork()
            if child > 0:
                os.write(report_w, str(child).encode())
        finally:
            if child != 0:
                os._exit(0)  # never back into the template's loop
        try:
            os.close(report_r)
            os.setsid()  # its own session and process group, as Popen(start_new_session=True)
            set_cmdline(request.argv)
            os.close(report_w)  # the template's read ends here: the child is what it says it is
        except BaseException:
            os._exit(1)  # never a second template serving the same socket
        return True
    os.close(report_w)
    os.waitpid(intermediate, 0)  # once it is reaped, the child's parent is the watchdog
    reported = b""
    while chunk := os.read(report_r, 32):
        reported += chunk
    os.close(report_r)
    os.close(request.output)  # only the child holds the pipe now: its end is the watchdog's EOF
    send(sock, {"pid": int(reported)} if reported else {"exec": "fork failed in the template"})
    return False


def serve(sock: socket.socket) -> Request | None:
    """Answer spawn requests until the watchdog closes the socket; returns the request in a forked child."""
    while True:
        message, fds = receive(sock)
        if message is None:
            return None
        request = Request(message, fds[0])
        reason = exec_reason(request.argv)
        if not reason and threading.active_count() != 1:
            reason = "the template has a thread running (it would not be fork-safe)"
        if not reason and request.cwd and not os.path.isdir(request.cwd):
            reason = "its working directory does not exist (exec reports it as before)"
        if reason:
            os.close(request.output)
            send(sock, {"exec": reason})
        elif fork(sock, request):
            return request


def become(request: Request, sock: socket.socket) -> list[str]:
    """In the forked child: its output pipe, environment and cwd; returns the cli arguments."""
    sock.close()
    os.dup2(request.output, 1)
    os.dup2(request.output, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.environ.clear()
    os.environ.update(request.env)
    if request.cwd:
        os.chdir(request.cwd)
    args = request.argv[3:]
    sys.argv = [sys.modules[ENTRY].__file__, *args]
    return args


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # no watchdog, no template
    if os.getppid() != int(sys.argv[2]):  # it died before the line above
        return 0
    modules = [name for name in sys.argv[3].split(",") if name]
    preload(modules)
    send(sock, {"ready": os.getpid(), "preloaded": modules})
    request = serve(sock)
    if request is None:
        return 0
    return sys.modules[ENTRY].main(become(request, sock))


if __name__ == "__main__":
    sys.exit(main())
