"""`[cluster]` (issue 21): a node name and the sender lease's length; it needs the shared PostgreSQL."""
from __future__ import annotations

import pytest

from monitors.config import ClusterConfig
from tests.conftest import BASE_CONFIG
from watchdog.components import load
from watchdog.shared.config import ConfigError

DATABASE = '\n[database]\nurl = "postgresql://wa@db.internal/company"\n'


def test_a_cluster_node_with_its_defaults(write_config) -> None:  # noqa: ANN001
    config = load(write_config(BASE_CONFIG + DATABASE + '\n[cluster]\nnode = "vps-a"\n'))
    assert config.cluster == ClusterConfig("vps-a", 5.0)
    assert config.cluster.silent_after_s == 15.0  # 3 × lease_s unless node_silent_s says otherwise
    assert (config.cluster.copy_grace_s, config.cluster.unknown_after_s) == (10.0, 60.0)  # sends in doubt


def test_no_cluster_table_is_one_host(write_config) -> None:  # noqa: ANN001
    assert load(write_config(BASE_CONFIG + DATABASE)).cluster is None


@pytest.mark.parametrize(("table", "database", "key", "problem"), [
    ('node = "vps-a"', "", "cluster", "requires [database] url"),
    ("lease_s = 5", DATABASE, "cluster.node", "missing required value"),
    ('node = "VPS A"', DATABASE, "cluster.node", "expected a short lower-case name"),
    ('node = "vps-a"\nlease_s = 0.1', DATABASE, "cluster.lease_s", "expected 1 to 300 seconds"),
    ('node = "vps-a"\nleases = 5', DATABASE, "cluster.leases", "unknown key"),
    ('node = "vps-a"\nnode_silent_s = 9', DATABASE, "cluster.node_silent_s", "expected 2 × lease_s .10. to 86400"),
    ('node = "vps-a"\ncopy_grace_s = 0', DATABASE, "cluster.copy_grace_s", "expected 0.5 to 600 seconds"),
    ('node = "vps-a"\ncopy_grace_s = 30\nunknown_after_s = 20', DATABASE, "cluster.unknown_after_s",
     "expected copy_grace_s .30. to 86400"),
])
def test_a_bad_cluster_table_names_its_key(write_config, table: str, database: str, key: str,  # noqa: ANN001
                                           problem: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}: {problem}".replace("[", r"\[")):
        load(write_config(BASE_CONFIG + database + f"\n[cluster]\n{table}\n"))


def test_a_sim_url_uses_that_simulator_instead_of_starting_one(write_config) -> None:  # noqa: ANN001
    from watchdog.components import builtin_programs
    own = load(write_config(BASE_CONFIG))
    text = BASE_CONFIG.replace("[sim]\nport = 0\n", '[sim]\nport = 0\nurl = "http://127.0.0.1:18777"\n')
    shared = load(write_config(text, name="shared.toml"))
    assert "sim" in [p.name for p in builtin_programs(own)]
    assert "sim" not in [p.name for p in builtin_programs(shared)] and shared.sim.url == "http://127.0.0.1:18777"


def test_a_bad_sim_url_names_its_key(write_config) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="sim.url: expected http://HOST:PORT"):
        load(write_config(BASE_CONFIG.replace("[sim]\nport = 0\n", '[sim]\nport = 0\nurl = "ws://somewhere"\n')))
