"""`scripts/chaos --cluster` (scripts/benchmarks/chaos_cluster.py): the six faults of issue 21 mixed at random on
two hosts. A short run in the suite (every kind of blow at least once), and the judgement of a send by the grant
current when WhatsApp got it."""
from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from scripts.benchmarks.chaos_cluster import BLOWS, CUTS, arguments, attribute, draws, run
from monitors.store.lease import Grant
from scripts.benchmarks.chaos_cluster_checks import History
from tests.pg import find_bin_dir


SHORT_RUN_MIN = 1.0  # the suite's run: one round of the six blows fits (asserted), the longer runs are scripts/chaos'


def test_a_send_is_judged_by_its_own_token_against_the_grants_made_before_whatsapp_got_it() -> None:
    grants = [Grant("main", 1, "vps-a", 100.0, None, "first"), Grant("main", 2, "vps-b", 110.0, "vps-a", "expired"),
              Grant("main", 3, "vps-a", 130.0, "vps-b", "holder_gone")]
    history = History(grants, offset=5.0)  # the simulator's clock 5 s ahead of the database's
    assert history.superseding("vps-a", 1, 114.9) == (None, "")  # token 2 was granted at 115 on the send's clock
    assert history.superseding("vps-a", 1, 115.0) == (grants[1], "superseded")  # current from its first instant
    assert history.superseding("vps-b", 2, 134.9) == (None, "")
    assert history.superseding("vps-b", 2, 140.0) == (grants[2], "superseded")
    assert history.superseding("vps-a", 3, 10**6) == (None, "")  # the newest grant is current for good
    assert history.superseding("vps-b", 1, 101.0) == (grants[0], "token 1 was vps-a's")
    assert history.superseding("vps-a", None, 101.0) == (None, "unfenced")
    assert history.superseding("vps-a", 9, 101.0) == (None, "token 9 never granted")


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
    result = run(arguments(["--minutes", str(SHORT_RUN_MIN), "--kill-every", "2", "--cut-s", "4", "--seed", "21",
                            "--server-ids"]), tmp_path, bin_dir)
    counts = result.outcome.counts
    kinds = set(BLOWS) if result.partitions else set(BLOWS) - set(CUTS)  # without root: no partitions
    assert set(result.faults) == kinds, result.faults
    assert counts["drops posted"] >= 0.7 * SHORT_RUN_MIN * 60 * 5, counts  # 5 drops a second
    assert counts["drops missed"] == counts["drops recorded twice"] == 0, counts
    assert counts["acks missing"] == counts["acks twice"] == counts["feedback unknown"] == 0, counts
    assert counts["webhook events"] >= counts["drops posted"] and counts["webhook events lost"] == 0, counts
    assert counts["two connections of a device"] == 0, counts  # a half-open one replaced is not two
    blows = "\n".join(attribute(result.outcome, result.blows, result.blows[0].at))
    assert counts["sent by a host not holding the current token"] == 0, blows  # judged by each send's own token
    assert counts["re-sent by a bridge (same id)"] == 0, blows
