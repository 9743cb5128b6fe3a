"""What an operator installs runs, and a release takes over the data directory of the one before it.

docs/OPERATIONS.md installs with `pip install .` and upgrades or rolls back with `git checkout <commit from
CHANGELOG.md>` and the same install. Here the working tree's wheel (built once per session) and the previous
release's tree (`git archive` of its commit, installed as its changelog entry says) go into fresh virtual
environments, and everything runs from a temporary directory, never from the source tree (`python -m` would
put the source tree first on sys.path).
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import tomllib
import urllib.request
from pathlib import Path

import pytest

from bridge.schema import MIGRATIONS as MESSAGES_MIGRATIONS
from monitors.store.schema import migrations
from monitors.store.sql import SQLITE
from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid, slow_start
from tests.bridge_support import call
from tests.conftest import ROOT, wait_until
from tests.contracts import CONTRACTS
from tests.installs import Release, Venv, build_wheel, clean_env, export, git, releases
from watchdog.shared import endpoints
from watchdog.shared.migrations import latest

# A small demo: the simulator, one account, two projects, the drops API (each API serves its OpenAPI document).
# In the keys 0.2.0 knows (no pace, no feedback.ack): the same file is run before and after the upgrade.
CONFIG = slow_start(config_text(2, pace="", ack="")) + "\n[drops_api]\nenabled = true\nport = 0\n"
NEWEST = releases()[0]


def pyproject_version(text: str) -> str:
    return tomllib.loads(text)["project"]["version"]


def test_the_changelog_names_this_version_and_real_release_commits() -> None:
    assert NEWEST.version == pyproject_version((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    released = [r for r in releases() if r.commit]
    assert len(released) >= 2, "CHANGELOG.md names the commits of the releases before this one"
    if git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: the release commits cannot be looked up")
    for release in released:
        assert git("merge-base", "--is-ancestor", release.commit, "HEAD").returncode == 0, \
            f"{release.version}: commit {release.commit} is not in this branch's history"
        # What the entry says --version prints is what that commit's pyproject.toml makes it print.
        shown = git("show", f"{release.commit}:pyproject.toml")
        printed = pyproject_version(shown.stdout.decode())
        assert release.prints in (f"wa-watchdog {printed}", None), f"{release.version}: --version prints {printed}"
        assert release.prints or "`--version`: none" in release.text, f"{release.version}: what --version prints"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This working tree as `pip install .` builds it, once per session."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def drops(system: RunningSystem) -> set[tuple[str, str]]:
    return set(system.query("drops", "SELECT project, drop_number FROM drops"))


def post_drop(system: RunningSystem, project: int, number: str) -> None:
    """A contractor posts a drop into the project's group; returns once the drops store has it."""
    system.inject(group_jid(project), CONTRACTORS[0], f"{number} installed")
    wait_until(lambda: (f"p{project}", number) in drops(system), 30, message=f"{number} recorded")


def imported(venv: Venv, cwd: Path) -> str:
    """Where that environment's Python finds the `watchdog` package."""
    return venv.python("import watchdog; print(watchdog.__file__)", cwd=cwd).strip()


def listed(venv: Venv, system: RunningSystem, cwd: Path) -> set[tuple[str, str]]:
    """`wa-watchdog drops --json` of that installation."""
    out = venv.run("drops", "--json", "--config", str(system.config_path), cwd=cwd)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return {(d["project"], d["drop_number"]) for d in json.loads(out.stdout)}


def stop(system: RunningSystem) -> None:
    """SIGTERM the watchdog by pid and wait for its exit: exit code 0, no traceback in its log."""
    assert system.stop() == 0, system.log_tail()
    assert "Traceback" not in system.log_path.read_text(errors="replace"), system.log_tail(60)


@pytest.mark.slow
def test_the_installed_package_runs_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    venv = Venv.create(tmp_path / "venv")
    venv.install(wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for module in venv.python("import watchdog, bridge, monitors\nfor m in (watchdog, bridge, monitors): "
                              "print(m.__file__)", cwd=elsewhere).split():
        assert Path(module).is_relative_to(tmp_path / "venv"), f"{module} is not the installed copy"

    version = venv.run("--version", cwd=elsewhere)
    assert (version.returncode, version.stdout.strip()) == (0, f"wa-watchdog {NEWEST.version}"), version.stderr

    unconfigured = venv.run("check", cwd=elsewhere)  # no --config, no conf/demo.toml here
    assert unconfigured.returncode == 2 and "Traceback" not in unconfigured.stderr, unconfigured.stderr
    assert f"no --config given and the default config {elsewhere}/conf/demo.toml does not exist: pass --config " \
           "FILE or set WA_WATCHDOG_CONFIG" in unconfigured.stderr

    system = RunningSystem(tmp_path / "demo", CONFIG, command=(venv.wa_watchdog,), cwd=elsewhere)
    system.data_dir.mkdir(mode=0o750)
    checked = venv.run("check", "--config", str(system.config_path), "--unit-dir", str(tmp_path), cwd=elsewhere)
    assert checked.returncode == 0 and "Traceback" not in checked.stderr, checked.stdout + checked.stderr

    system.start()
    try:
        for contract in CONTRACTS:  # each API's document, read from the package by the process serving it
            url = endpoints.url(system.data_dir, contract.component, contract.endpoint)
            status, served = call("GET", f"{url}/openapi.json")
            assert status == 200 and served["paths"].keys() == contract.spec()["paths"].keys(), contract.name
        control = endpoints.url(system.data_dir, "watchdog", "control")
        with urllib.request.urlopen(f"{control}/console/static/console.css", timeout=10) as css:
            assert css.read() == (ROOT / "watchdog/control/console/static/console.css").read_bytes()
        post_drop(system, 1, "DR1734150")
        with urllib.request.urlopen(f"{control}/", timeout=10) as page:  # the drops view: an entry point
            assert "Drops today" in page.read().decode()
    finally:
        stop(system)
    assert listed(venv, system, elsewhere) == {("p1", "DR1734150")}


def previous_release() -> Release:
    """The newest release with a commit, its tree present in this clone (else the test is skipped)."""
    release = next(r for r in releases() if r.commit)
    if git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: the previous release cannot be built from its commit")
    if git("cat-file", "-e", f"{release.commit}^{{commit}}").returncode != 0:
        pytest.skip(f"commit {release.commit} of release {release.version} is not in this clone (shallow?)")
    return release


def schema_versions(data_dir: Path) -> tuple[int, int]:
    """PRAGMA user_version of messages.db and drops.db."""
    versions = []
    for path in (data_dir / "accounts/main/messages.db", data_dir / "drops.db"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            versions.append(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.close()
    return versions[0], versions[1]


@pytest.mark.slow
def test_the_previous_release_s_data_directory_is_upgraded_and_rolled_back_as_documented(
        wheel: Path, tmp_path: Path) -> None:
    previous = previous_release()
    tree = export(previous.commit, tmp_path / "release")
    venv = Venv.create(tmp_path / "venv")
    venv.install(tree, editable=previous.editable)  # git checkout <commit>; the install line of its entry
    work = tmp_path / "work"
    work.mkdir()
    assert Path(imported(venv, work)).is_relative_to(tree if previous.editable else venv.path)
    if previous.prints:
        assert venv.run("--version", cwd=work).stdout.strip() == previous.prints
    system = RunningSystem(tmp_path / "system", CONFIG, command=(venv.wa_watchdog,), cwd=work)

    system.start()
    try:
        post_drop(system, 1, "DR1734150")
        post_drop(system, 2, "DR1734151")
    finally:
        stop(system)
    old_messages = set(system.query("messages", "SELECT id, chat_jid, content FROM messages"))
    assert {"DR1734150 installed", "DR1734151 installed"} <= {text for _, _, text in old_messages}  # and the acks
    old_versions = schema_versions(system.data_dir)

    venv.install(wheel)  # the upgrade: git checkout <new commit>; pip install .
    assert Path(imported(venv, work)).is_relative_to(venv.path)
    version = venv.run("--version", cwd=work)
    assert version.stdout.strip() == f"wa-watchdog {NEWEST.version}", version.stderr
    system.start()
    try:
        assert drops(system) == {("p1", "DR1734150"), ("p2", "DR1734151")}
        post_drop(system, 1, "DR1734152")
    finally:
        stop(system)
    assert old_messages < set(system.query("messages", "SELECT id, chat_jid, content FROM messages"))
    assert listed(venv, system, work) == {("p1", "DR1734150"), ("p2", "DR1734151"), ("p1", "DR1734152")}
    assert schema_versions(system.data_dir) == (latest(MESSAGES_MIGRATIONS), latest(migrations(SQLITE)))

    # The rollback (git checkout <old commit>; its install line) puts back the code installed at the start of
    # this test; that code, run here from its tree (cwd first on sys.path), reads the upgraded data directory
    # if no migration ran, else refuses it (exit 2) and the changelog says to restore the backup.
    def old_release(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv.path / "bin" / "python"), "-m", "watchdog.cli", *args], cwd=tree,
                              capture_output=True, text=True, timeout=60, env=clean_env())
    config = ("--config", str(system.config_path))
    if schema_versions(system.data_dir) == old_versions:
        rolled_back = old_release("drops", "--json", *config)
        assert rolled_back.returncode == 0, rolled_back.stderr
        assert {(d["project"], d["drop_number"]) for d in json.loads(rolled_back.stdout)} == {
            ("p1", "DR1734150"), ("p2", "DR1734151"), ("p1", "DR1734152")}
        assert "no schema migration" in NEWEST.text, "CHANGELOG.md must say that rolling back needs no restore"
    else:
        refused = old_release("drops", *config)
        assert refused.returncode == 2 and "newer" in refused.stderr, refused.stderr
        assert "no schema migration" not in NEWEST.text and "**schema migration**" in NEWEST.text, \
            "CHANGELOG.md must say that a migration runs and a rollback needs the backup"
