"""The Flower apps: ``server_app`` (runs on the server, started by the SuperLink) and
``client_app`` (runs on each site, started by its SuperNode for every message).

``fedbcs serve`` and ``fedbcs join`` (:mod:`fedbcs_lightning.flower.deploy`) start them;
their components are ``fedbcs_lightning.flower.apps:server_app`` and ``...:client_app``.

The server app reads its run config (``--run-config`` of ``flwr run``):

- ``config-file``: the resolved YAML config of the run;
- ``run-dir``: the run directory (on the server's disk), as ``fedbcs fit --output``;
- ``resume``: continue the run in ``run-dir`` from its last saved round;
- ``overwrite``: replace an earlier run's files in ``run-dir``;
- ``outcome-file``: where to write how the run ended (JSON), for ``fedbcs serve``;
- ``site-nodes``: JSON, each site's name -> the node ID of its registered key (site
  authentication): a node may only be the site its key was registered for;
- ``imports``: modules to import first, comma-separated (``fedbcs serve --import``): the
  only code a run imports; the modules a config lists (``run.imports``) are a record.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    from fedbcs_lightning.flower.server import GridTransport

    run_server(GridTransport(grid), dict(context.run_config))


def run_server(transport: Any, run_config: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) the run ``run_config`` describes over the sites behind
    ``transport``; write and return the outcome (``status``: finished, stopped or failed,
    with a ``message``)."""
    from fedbcs_lightning.api import ResumeError, fit, resume
    from fedbcs_lightning.config import ConfigError, resolve
    from fedbcs_lightning.federation.updates import FederationStopped
    from fedbcs_lightning.flower.server import FlowerEngine
    from fedbcs_lightning.registry import import_modules
    from fedbcs_lightning.rundir import RunDirectoryError

    outcome_file = run_config.get("outcome-file") or None
    import json

    site_nodes = {
        str(k): int(v) for k, v in json.loads(run_config.get("site-nodes") or "{}").items()
    }
    engine = FlowerEngine(transport, site_nodes=site_nodes)
    run_dir = Path(str(run_config["run-dir"]))
    try:
        import_modules([m for m in str(run_config.get("imports") or "").split(",") if m])
        if run_config.get("resume"):
            run = resume(run_dir, engine=engine)
        else:
            config = resolve(str(run_config["config-file"]))
            run = fit(config, run_dir, overwrite=bool(run_config.get("overwrite")), engine=engine)
        outcome = {"status": "finished", "message": run.summary_table()}
    except (FederationStopped, ConfigError, ResumeError, RunDirectoryError, ImportError) as err:
        outcome = {"status": "stopped", "message": str(err)}
    except BaseException as err:
        outcome = {"status": "failed", "message": "".join(traceback.format_exception(err))}
        _write(outcome_file, outcome)
        raise
    _write(outcome_file, outcome)
    if outcome["status"] == "finished" or not outcome_file:  # fedbcs serve says why it stopped
        print(outcome["message"], flush=True)
    return outcome


def _write(path: Any, outcome: dict[str, Any]) -> None:
    if path:
        from fedbcs_lightning.io import atomic_write_json

        atomic_write_json(Path(str(path)), outcome)


def _answer(message: Message, context: Context) -> Message:
    from fedbcs_lightning.flower.site import Site

    return Message(Site(context.node_config).handle(message.content), reply_to=message)


@client_app.train()
def _train(message: Message, context: Context) -> Message:
    return _answer(message, context)


@client_app.evaluate()
def _evaluate(message: Message, context: Context) -> Message:
    return _answer(message, context)


@client_app.query()
def _query(message: Message, context: Context) -> Message:
    return _answer(message, context)


__all__ = ["client_app", "run_server", "server_app"]
