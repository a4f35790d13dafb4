"""Which connected node is which site of a Flower federation (the server's side).

A node says which site it is when asked (``describe``); :class:`Roster` decides whether
it may be: with site authentication each site's key is bound to its name, and a
connected site's name is never taken by a second node. Nodes that leave are forgotten,
so a site that comes back is asked again and takes part from then on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

from flwr.app import RecordDict

from fedbcs_lightning.flower.records import (
    MalformedReply,
    decode_reply,
    encode_instruction,
    refusal,
)
from fedbcs_lightning.methods.base import Instruction


class Transport(Protocol):
    def node_ids(self) -> list[int]: ...

    def send(
        self, contents: dict[int, RecordDict], kind: str, timeout: float
    ) -> dict[int, RecordDict | str]:
        """Deliver one message per node; each node's reply, or why there is none."""
        ...


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Roster:
    """Which connected node is which site.

    A node says which site it is when first asked (``describe``). With site
    authentication, each site's key is bound to its name on the server (``bound``: site
    name -> the node ID its registered key gives), so a node may only be the site whose key
    it signs with. Whatever the authentication, a site that is connected is never taken
    over by a second node claiming its name. A node that leaves is forgotten, so when it
    (or a new node for that site) comes back it is asked again and the site takes part
    from the next round.
    """

    def __init__(
        self,
        transport: Transport,
        bound: dict[str, int] | None = None,
        say: Callable[[str], None] = log,
    ) -> None:
        self.transport = transport
        self.bound = dict(bound or {})
        self.say = say
        self.nodes: dict[str, int] = {}  # site -> the node that is it now
        self.asked: set[int] = set()  # online nodes already asked (accepted or not)

    def node_of(self, name: str) -> int | None:
        return self.nodes.get(name)

    def refresh(
        self, header: dict[str, Any], timeout: float, names: set[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Forget nodes that left; ask new ones which site they are. Returns what each
        newly accepted site said (``names``, when given, are the sites of the run)."""
        online = set(self.transport.node_ids())
        for name, node in list(self.nodes.items()):
            if node not in online:
                del self.nodes[name]
                self.say(f"site {name} disconnected")
        self.asked &= online
        new = sorted(online - self.asked)
        if not new:
            return {}
        self.asked |= set(new)
        contents = {n: encode_instruction(Instruction({}, {}), header) for n in new}
        accepted: dict[str, dict[str, Any]] = {}
        for node, reply in sorted(self.transport.send(contents, "describe", timeout).items()):
            why = reply if isinstance(reply, str) else refusal(reply)
            if why:
                self.say(f"node {node} cannot take part: {short(why)}")
                continue
            try:
                answer = _description(reply)
            except MalformedReply as err:
                self.say(f"node {node} sent an unreadable description ({err}); ignored")
                continue
            name = answer["site"]
            refused = self.claim(node, name, names)
            holder = self.nodes.get(name)
            if not refused and holder not in (None, node):
                refused = (
                    f"site {name!r} is already connected (node {holder}); a name is taken once"
                )
                self.asked.discard(node)  # asked again, in case the site's node has left
            if refused:
                self.say(f"node {node} refused: {refused}")
                continue
            self.nodes[name] = node
            accepted[name] = answer
        return accepted

    def claim(self, node: int, name: str, names: set[str] | None) -> str | None:
        """Why ``node`` may never be site ``name`` (``None``: it may, once the name is
        free)."""
        if names is not None and name not in names:
            return f"it says it is site {name!r}, which is not a site of this run"
        if self.bound:
            owner = next((site for site, bound in self.bound.items() if bound == node), None)
            if owner is None:
                return f"it says it is site {name!r}, but its key is none of the sites' keys"
            if owner != name:
                return (
                    f"it says it is site {name!r}, but it signs with the key of site "
                    f"{owner!r}; a site key admits only the site it was registered for"
                )
        return None


#: What a site's description holds about its data (all sites of a run must agree).
DATA_KEYS = ("name", "class_names", "regions", "in_channels", "whole_images")


def _description(reply: RecordDict) -> dict[str, Any]:
    """A site's answer to ``describe``, checked for what the server reads of it."""
    answer = decode_reply(reply)
    if not isinstance(answer.get("site"), str) or not answer["site"]:
        raise MalformedReply("it names no site")
    data = answer.get("data")
    if not isinstance(data, dict) or any(k not in data for k in DATA_KEYS):
        raise MalformedReply("its data description is incomplete")
    if not isinstance(answer.get("splits"), dict):
        raise MalformedReply("it holds no split sizes")
    return answer


def short(reason: str, limit: int = 400) -> str:
    """A reason fit for one log line (a site's traceback is in the site's own log)."""
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
