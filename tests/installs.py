"""wa-watchdog installed as an operator installs it: a wheel (or a release's own install line) in a fresh
virtual environment, run from outside the source tree. CHANGELOG.md's releases, read as the tests need them.

Why a .pth for the dependencies: installing aiohttp, psycopg & co. into every fresh environment would need
an index and a minute; the .pth names this environment's site-packages, which holds the dependencies but not
wa-watchdog itself (the checkout is installed there in editable mode, by a .pth of its own that a .pth line
does not run). The tests assert that `watchdog` is imported from the fresh environment.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

CHANGELOG = ROOT / "CHANGELOG.md"
# "## 0.2.0: commit `1a283c7` (2026-12-01)" or "## 0.3.0.dev0: unreleased (`main`)"
HEADING = re.compile(r"^## (?P<version>\S+): (?:commit `(?P<commit>[0-9a-f]{7,40})`|unreleased)", re.M)
NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".pytest_cache")


@dataclass(frozen=True)
class Release:
    version: str
    commit: str | None  # None: unreleased (what the checkout holds)
    text: str  # the entry

    @property
    def prints(self) -> str | None:
        """What the entry says its `wa-watchdog --version` prints (None: it has no --version)."""
        found = re.search(r"`--version`: `(wa-watchdog [^`]+)`", self.text)
        return found[1] if found else None

    @property
    def editable(self) -> bool:
        """The entry's install line is `pip install -e` (a release whose plain install does not run)."""
        return "pip install -e " in self.text


def releases() -> list[Release]:
    """CHANGELOG.md's entries, newest first."""
    text = CHANGELOG.read_text(encoding="utf-8")
    found = list(HEADING.finditer(text))
    ends = [m.start() for m in found[1:]] + [len(text)]
    return [Release(m["version"], m["commit"], text[m.start():end]) for m, end in zip(found, ends)]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, timeout=60)


def export(commit: str, dest: Path) -> Path:
    """The tree of `commit` (what `git checkout` gives), without touching this checkout."""
    archive = dest.with_suffix(".tar")
    out = git("archive", "--format=tar", "-o", str(archive), commit)
    assert out.returncode == 0, out.stderr.decode()
    dest.mkdir()
    subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(dest)], check=True, timeout=60)
    return dest


def build_wheel(out: Path) -> Path:
    """The wheel of this checkout's working tree, built from a copy (setuptools' build/ in the tree would add
    whatever an earlier build left there)."""
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SHIPPED)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                            "--no-build-isolation", "-w", str(out), str(source)], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("wa_watchdog-*.whl")
    return wheel


@dataclass(frozen=True)
class Venv:
    path: Path

    @classmethod
    def create(cls, path: Path) -> Venv:
        """A new environment without pip (pip --python installs into it), the dependencies by a .pth."""
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
        venv = cls(path)
        deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
        (Path(venv.python("import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
         / "wa_watchdog_test_deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
        return venv

    @property
    def wa_watchdog(self) -> str:
        return str(self.path / "bin" / "wa-watchdog")

    def install(self, target: Path, editable: bool = False) -> None:
        """`pip install .` (or `-e .`) of a tree, or of a wheel; offline, the dependencies already there."""
        installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(self.path / "bin" / "python"),
                                    "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                                    *(["-e"] if editable else []), str(target)],
                                   capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, installed.stderr

    def python(self, code: str, cwd: Path | None = None) -> str:
        ran = subprocess.run([str(self.path / "bin" / "python"), "-c", code], cwd=cwd, capture_output=True,
                             text=True, timeout=60, env=clean_env())
        assert ran.returncode == 0, ran.stderr
        return ran.stdout

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        """`wa-watchdog ARGS` of this environment, from `cwd`."""
        return subprocess.run([self.wa_watchdog, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                              env=clean_env())


def clean_env() -> dict[str, str]:
    """The caller's environment less what would point the interpreter elsewhere (and less a config default)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "WA_WATCHDOG_CONFIG") and not k.startswith("NOTIFY_SOCKET")}
