"""bridge/membership.py: the followed groups WhatsApp does not list for the number, named with their projects."""
from __future__ import annotations

import asyncio

from bridge.membership import Membership, followed_groups
from bridge.transport import NotConnected
from tests.conftest import BASE_CONFIG, GROUP_A, GROUP_B, GROUP_C
from watchdog.components import load


class Groups:
    """The part of a transport Membership uses: WhatsApp's answer, or no connection."""

    def __init__(self) -> None:
        self.answer: list[str] | None = None
        self.asked = 0

    async def joined_groups(self) -> list[str]:
        self.asked += 1
        if self.answer is None:
            raise NotConnected("not connected to the simulator")
        return self.answer


def test_missing_groups_name_their_projects_once_whatsapp_answered(write_config) -> None:
    text = BASE_CONFIG.replace('watchdog_sec = 3.0\n', f'watchdog_sec = 3.0\nfollow_groups = ["{GROUP_C}"]\n', 1)
    text += f'\n[[projects]]\nname = "velo"\ngroups = ["{GROUP_B}"]\n\n[[projects]]\nname = "off"\nenabled = false\n' \
            f'groups = ["{GROUP_A}"]\n'
    config = load(write_config(text))
    account = config.account("main")
    assert followed_groups(config, account) == {GROUP_C: [], GROUP_A: ["lawley"], GROUP_B: ["mohadin", "velo"]}
    groups = Groups()
    membership = Membership(config, account, groups)  # type: ignore[arg-type]

    async def scenario() -> None:
        await membership.refresh(lambda: False)  # not connected: WhatsApp is not asked
        assert groups.asked == 0 and membership.health() == {"groups": None, "not_in_groups": []}
        await membership.refresh(lambda: True)  # asked, no answer: still unknown, nothing claimed
        assert membership.health() == {"groups": None, "not_in_groups": []}
        groups.answer = [GROUP_C, GROUP_A, "120363000000000099@g.us"]
        await membership.refresh(lambda: True)
        assert membership.health() == {"groups": [GROUP_A, GROUP_C, "120363000000000099@g.us"],
                                       "not_in_groups": [{"group": GROUP_B, "projects": ["mohadin", "velo"]}]}
        groups.answer = None  # a lost connection keeps the last answer
        await membership.refresh(lambda: True)
        assert membership.missing() == [{"group": GROUP_B, "projects": ["mohadin", "velo"]}]
    asyncio.run(scenario())
