"""A transport that calls sites directly, in this process: the Flower engine's logic
(records, site state on disk, dropouts) without Flower's processes."""

from __future__ import annotations

from fedbcs_lightning.flower.site import Site


class LoopbackTransport:
    def __init__(self, sites: dict[str, dict], state_dir) -> None:
        self.sites = {
            100 + k: Site({"site": name, "state-dir": str(state_dir), **extra})
            for k, (name, extra) in enumerate(sites.items())
        }
        self.sent: list[tuple[str, list[int]]] = []
        self.fail: dict[tuple[str, str], str] = {}  # (site, kind) -> why it does not answer, once

    def node_ids(self) -> list[int]:
        return sorted(self.sites)

    def send(self, contents, kind, timeout):
        self.sent.append((kind, sorted(contents)))
        out = {}
        for node, content in contents.items():
            site = self.sites[node]
            if (site.name, kind) in self.fail:
                out[node] = self.fail.pop((site.name, kind))
                continue
            out[node] = site.handle(content)
        return out
