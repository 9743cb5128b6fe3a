"""A supervisord.conf confined to one directory (socket, log, pid): the recovery benchmark and the tests share it."""
from __future__ import annotations

from pathlib import Path

HEAD = """\
[unix_http_server]
file={work}/supervisor.sock

[supervisord]
nodaemon=true
logfile={work}/supervisord.log
pidfile={work}/supervisord.pid
childlogdir={work}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{work}/supervisor.sock

"""


def write_supervisord_conf(work: Path, programs: str) -> Path:
    """`work/supervisord.conf`: everything supervisord writes stays in `work`; `programs` are the sections after."""
    conf = work / "supervisord.conf"
    conf.write_text(HEAD.format(work=work) + programs, encoding="utf-8")
    return conf
