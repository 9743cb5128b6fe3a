"""`scripts/chaos --cluster` (scripts/benchmarks/chaos_cluster.py): the six faults of issue 21 mixed at random on
two hosts. A short run in the suite (every kind of blow at least once), and the judgement of a send by the grant
current when WhatsApp got it."""
from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from scripts.benchmarks.chaos_cluster import BLOWS, CUTS, arguments, attribute, draws, run
from scripts.benchmarks.chaos_cluster_checks import Grant, holder_at
from tests.pg import find_bin_dir

# Counts an open anomaly of issue 21 makes non-zero, reported (an expected failure), not passed: an ack judged sent
# under another host's token right after a takeover (the checker polls the lease every 0.1 s: maybe its artefact).
# (A host cut off from WhatsApp reconnecting over its half-open connection is "half-open connections replaced", not
# two connections. In server-ids mode a bridge's resend is a second message, counted as an ack twice: asserted.)
KNOWN = ("sent by a host not holding the current token",)


def test_a_send_is_judged_by_the_last_grant_before_whatsapp_got_it() -> None:
    grants = [Grant(1, "vps-a", 100.0), Grant(2, "vps-b", 110.0), Grant(3, "vps-a", 130.0)]
    assert holder_at(grants, 99.9) is None  # before any grant: nobody may send
    assert holder_at(grants, 109.9) == grants[0]
    assert holder_at(grants, 110.0) == grants[1]  # the new grant is current from its first instant
    assert holder_at(grants, 500.0) == grants[2]


def test_each_round_of_blows_has_every_kind_once_in_a_random_order() -> None:
    drawn = list(itertools.islice(draws(BLOWS, random.Random(7)), 3 * len(BLOWS)))
    rounds = [drawn[i:i + len(BLOWS)] for i in range(0, len(drawn), len(BLOWS))]
    assert all(sorted(r) == sorted(BLOWS) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # not one fixed order


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_short_run_of_every_fault_loses_nothing_and_acknowledges_once(tmp_path: Path) -> None:
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        pytest.skip(why)
    # --server-ids: the hosts send as neonize does, so a lost answer sent again would be an ack twice (asserted)
    result = run(arguments(["--minutes", "1.5", "--kill-every", "2", "--cut-s", "4", "--seed", "21", "--server-ids"]),
                 tmp_path, bin_dir)
    counts = result.outcome.counts
    kinds = set(BLOWS) if result.partitions else set(BLOWS) - set(CUTS)  # without root: no partitions
    assert set(result.faults) == kinds, result.faults
    assert counts["drops posted"] >= 0.7 * 90 * 5, counts
    assert counts["drops missed"] == counts["drops recorded twice"] == 0, counts
    assert counts["acks missing"] == counts["acks twice"] == counts["feedback unknown"] == 0, counts
    assert counts["webhook events"] >= counts["drops posted"] and counts["webhook events lost"] == 0, counts
    assert counts["two connections of a device"] == 0, counts  # a half-open one replaced is not two
    if found := {key: counts[key] for key in KNOWN if counts[key]}:
        pytest.xfail(f"open defects of issue 21 shown: {found}, after these blows:\n"
                     + "\n".join(attribute(result.outcome, result.blows, result.blows[0].at)))
