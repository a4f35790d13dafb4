"""Commands for a federation across machines on Flower: ``serve`` (the server) and
``join`` (one site). ``fedbcs_cli.main`` registers them. See docs/deploy.md."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated

import typer

from fedbcs_cli.common import IMPORTS, fail, import_or_fail, resolve_or_fail
from fedbcs_lightning.config import preset_names

NEEDS_FLOWER = (
    "the multi-machine engine needs Flower: pip install 'fedbcs-lightning[flower]' "
    "(scripts/install.sh installs it)"
)
CA = typer.Option("--ca", help="CA certificate (PEM) that signed the server's certificate.")
INSECURE = typer.Option(
    "--insecure", help="Plain HTTP without TLS: only for trying things on one machine."
)


def _flower_or_fail() -> None:
    if importlib.util.find_spec("flwr") is None:
        fail(NEEDS_FLOWER, code=1)


def _tls(ca: Path | None, cert: Path | None, key: Path | None, insecure: bool, server: bool):
    from fedbcs_lightning.flower.credentials import Tls

    files = {"--ca": ca, "--cert": cert, "--key": key} if server else {"--ca": ca}
    given = {name: path for name, path in files.items() if path is not None}
    if insecure:
        if given:
            fail(f"--insecure turns TLS off; drop {', '.join(given)} or --insecure")
        return None
    missing = [name for name in files if name not in given]
    if missing:
        fail(f"TLS needs {', '.join(missing)} (or --insecure to try things on one machine)")
    for name, path in given.items():
        if not path.is_file():
            fail(f"{name} {path}: no such file")
    return Tls(*(p.resolve() for p in given.values()))


def serve(
    dataset: Annotated[str | None, typer.Option(help="Data set name the sites hold.")] = None,
    method: Annotated[str | None, typer.Option(help="Method (see `fedbcs methods`).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Communication rounds.")] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Image size (a multiple of the backbone's input_divisor: 16 for unet)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help=f"YAML file or preset ({', '.join(preset_names())})."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any key: --set section.key=value (repeatable)."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Run directory, on this machine.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run directory from its last saved round.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier run's files in --output.")
    ] = False,
    min_sites: Annotated[
        int | None,
        typer.Option(help="Sites whose updates a round needs (server.min_clients)."),
    ] = None,
    sites: Annotated[
        int | None,
        typer.Option(help="Sites to wait for before round 1 (server.sites; default --min-sites)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port the sites dial (HTTPS).")] = 8000,
    home: Annotated[
        Path,
        typer.Option(help="Server folder: Flower's state, registered sites, logs."),
    ] = Path("fedbcs-server"),
    ca: Annotated[Path | None, CA] = None,
    cert: Annotated[Path | None, typer.Option(help="Server certificate (PEM).")] = None,
    key: Annotated[Path | None, typer.Option(help="Server private key (PEM).")] = None,
    site_key: Annotated[
        list[str] | None,
        typer.Option(
            "--site-key",
            metavar="[NAME=]FILE",
            help="A site allowed to join and its public key (repeatable): NAME=FILE, or "
            "FILE for a site named like the file (site-a.pub: site-a). The key admits only "
            "that site; with any, every site must authenticate with its private key.",
        ),
    ] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
    insecure: Annotated[bool, INSECURE] = False,
) -> None:
    """Run the server of a federation across machines: waits for the sites, trains, and
    writes the run directory here (as `fedbcs fit` does)."""
    _flower_or_fail()
    tls = _tls(ca, cert, key, insecure, server=True)
    if site_key and tls is None:
        fail("--site-key (site authentication) needs TLS: give --ca, --cert and --key")
    import_or_fail(imports)
    from fedbcs_lightning.flower.credentials import (
        DeployError,
        SiteKey,
        check_server_files,
        check_site_keys,
    )
    from fedbcs_lightning.flower.deploy import Server

    home = home.resolve()
    if resume is not None:
        given = {
            "--dataset": dataset, "--method": method, "--rounds": rounds,
            "--local-epochs": local_epochs, "--batch-size": batch_size, "--lr": lr,
            "--image-size": image_size, "--seed": seed, "--config": config, "--set": set_,
            "--output": output, "--overwrite": overwrite, "--min-sites": min_sites,
            "--sites": sites,
        }  # fmt: skip
        extra = [name for name, value in given.items() if value is not None and value is not False]
        if extra:
            fail(f"--resume continues the saved configuration; drop {', '.join(extra)}")
        run_config = {"run-dir": str(resume.resolve()), "resume": True,
                      "imports": ",".join(imports or [])}  # fmt: skip
    else:
        cfg = resolve_or_fail(
            config,
            set_,
            **{
                "data.name": dataset,
                "train.method": method,
                "train.rounds": rounds,
                "train.local_epochs": local_epochs,
                "train.batch_size": batch_size,
                "train.lr": lr,
                "data.image_size": image_size,
                "run.seed": seed,
                "server.min_clients": min_sites,
                "server.sites": sites,
                "run.imports": imports or None,
            },  # fmt: skip
        )
        from fedbcs_lightning.api import default_run_dir
        from fedbcs_lightning.config import save

        run_dir = (output or Path(cfg.run.output or default_run_dir(cfg))).resolve()
        home.mkdir(parents=True, exist_ok=True)
        save(cfg, home / "run.yaml")
        run_config = {"config-file": str(home / "run.yaml"), "run-dir": str(run_dir),
                      "overwrite": overwrite, "imports": ",".join(imports or [])}  # fmt: skip
    try:
        if tls is not None:
            check_server_files(tls)
        keys = tuple(SiteKey.parse(text) for text in site_key or ())
        check_site_keys(keys)
    except (ValueError, DeployError) as err:
        fail(str(err))
    server = Server(home, host, port, tls, keys)
    try:
        outcome = server.run(run_config)
    except DeployError as err:
        fail(str(err), code=1)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; continue with: fedbcs serve --resume {run_config['run-dir']}")
        raise typer.Exit(130) from None
    if outcome["status"] != "finished":
        fail(outcome["message"], code=1)
    typer.echo(f"\nrun directory: {run_config['run-dir']}")


def join(
    server: Annotated[str, typer.Option(help="The server's address, HOST:PORT.")],
    site: Annotated[str, typer.Option(help="This site's name (its folder in the data set).")],
    data_root: Annotated[
        Path | None, typer.Option(help="Folder of this site's data (none for synthetic).")
    ] = None,
    state_dir: Annotated[
        Path,
        typer.Option(help="Where this site keeps what outlives a round (never sent)."),
    ] = Path("fedbcs-site"),
    ca: Annotated[Path | None, CA] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="This site's private key, if the server authenticates sites."),
    ] = None,
    port: Annotated[
        int, typer.Option(help="Local port of this site's Flower runtime (one per site).")
    ] = 9094,
    accelerator: Annotated[
        str | None, typer.Option(help="Device for this site: cpu, gpu, auto.")
    ] = None,
    max_wait: Annotated[
        float | None,
        typer.Option(help="Give up after this many seconds without reaching the server."),
    ] = None,
    imports: Annotated[list[str] | None, IMPORTS] = None,
    insecure: Annotated[bool, INSECURE] = False,
) -> None:
    """Join a federation as one site: train on this machine's data when the server asks.
    Images, masks and file names never leave; weights, metrics and the method's summaries
    (e.g. FedBCS's class prototypes) do. Stop with Ctrl-C."""
    _flower_or_fail()
    tls = _tls(ca, None, None, insecure, server=False)
    import_or_fail(imports)
    if data_root is not None and not data_root.is_dir():
        fail(f"--data-root {data_root}: no such folder")
    from fedbcs_lightning.flower.credentials import (
        DeployError,
        check_certificates,
        check_site_key,
        probe_server,
    )
    from fedbcs_lightning.flower.deploy import join as run_join

    try:
        if tls:
            check_certificates(tls.ca, "--ca")
        if key is not None:
            if not key.is_file():
                fail(f"--key {key}: no such file")
            check_site_key(key)
        probe_server(server, tls.ca if tls else None)
    except DeployError as err:
        fail(str(err))

    state_dir = state_dir.resolve()
    node_config = {
        "site": site,
        "data-root": str(data_root.resolve()) if data_root else "",
        "state-dir": str(state_dir),
        "accelerator": accelerator or "",
        "imports": ",".join(imports or []),
    }
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    code = run_join(
        server, node_config, state_dir / ".flower", port, tls.ca if tls else None,
        key.resolve() if key else None, max_wait,
    )  # fmt: skip
    raise typer.Exit(code)
