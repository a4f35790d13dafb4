"""Starting Flower's processes for ``fedbcs serve`` (server) and ``fedbcs join`` (a site).

The server runs a SuperLink (one HTTP(S) port for the sites and for its own control
connection) and submits the run to it with ``flwr run``; the SuperLink then starts the
server app (:mod:`fedbcs_lightning.flower.apps`), which writes the run directory. A site
runs a SuperNode that dials the SuperLink and starts the client app for every message.

Every process runs with Flower's telemetry, update check and run-time dependency
installation off: nothing is installed and nothing but the SuperLink is contacted. Both
sides use the Python environment they were started from (torch, Lightning and this
library must be installed on every machine beforehand).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fedbcs_lightning.flower.credentials import DeployError, SiteKey, Tls, check_site_keys

QUIET = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
CONNECTION = "fedbcs"  # the name of the server's control connection in its Flower home
APP_CONFIG = {"config-file": "", "run-dir": "", "resume": False, "overwrite": False,
              "outcome-file": "", "imports": "", "site-nodes": "{}"}  # fmt: skip


def environment(home: Path) -> dict[str, str]:
    """This environment with Flower quiet, its home at ``home``, and this Python's
    scripts first on ``PATH`` (Flower starts ``flwr-serverapp``/``flwr-clientapp`` by name)."""
    env = {**os.environ, **QUIET, "FLWR_HOME": str(home)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_app(home: Path) -> Path:
    """The Flower app the server submits: a ``pyproject.toml`` naming the installed apps."""
    app = home / "app"
    app.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{_toml(k)} = {_toml(v)}" for k, v in APP_CONFIG.items())
    (app / "pyproject.toml").write_text(
        '[project]\nname = "fedbcs-federation"\nversion = "1.0.0"\n'
        'description = "A fedbcs-lightning federation"\nlicense = "Apache-2.0"\n\n'
        '[tool.flwr.app]\npublisher = "fedbcs-lightning"\n\n'
        "[tool.flwr.app.components]\n"
        'serverapp = "fedbcs_lightning.flower.apps:server_app"\n'
        'clientapp = "fedbcs_lightning.flower.apps:client_app"\n\n'
        f"[tool.flwr.app.config]\n{config}\n"
    )
    return app


def write_connection(home: Path, port: int, tls: Tls | None) -> None:
    """The server's own control connection to its SuperLink (``flwr run``, registering)."""
    security = f"root-certificates = {_toml(str(tls.ca))}" if tls else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\n{security}\n'
    )


def superlink_command(host: str, port: int, home: Path, tls: Tls | None, auth: bool) -> list[str]:
    command = ["flower-superlink", "--host", host, "--port", str(port),
               "--disable-runtime-dependency-installation"]  # fmt: skip
    if auth:  # registered site keys live in a database file, from one start to the next
        command += ["--database", str(home / "superlink.db")]
    if tls:
        command += ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert),
                    "--ssl-keyfile", str(tls.key)]  # fmt: skip
    else:
        command.append("--insecure")
    if auth:
        command.append("--enable-supernode-auth")
    return command


def supernode_command(
    superlink: str,
    node_config: dict[str, str],
    port: int,
    ca: Path | None,
    private_key: Path | None,
    max_wait: float | None = None,
) -> list[str]:
    pairs = " ".join(f"{k}={_toml(v)}" for k, v in node_config.items() if v)
    command = ["flower-supernode", "--superlink", superlink, "--port", str(port),
               "--node-config", pairs]  # fmt: skip
    command += ["--root-certificates", str(ca)] if ca else ["--insecure"]
    if private_key:
        command += ["--auth-supernode-private-key", str(private_key)]
    if max_wait:
        command += ["--max-wait-time", str(max_wait)]
    return command


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeployError(f"the SuperLink exited with code {process.returncode}:\n"
                              f"{_tail(log)}")  # fmt: skip
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise DeployError(f"the SuperLink did not open port {port} within {timeout:g} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def launch(command: list[str], env: dict[str, str], **streams) -> subprocess.Popen:
    """Start a Flower process in its own process group (it starts helpers of its own)."""
    return subprocess.Popen(command, env=env, start_new_session=True, **streams)


def _stop_on_sigterm() -> None:
    """Let SIGTERM unwind like Ctrl-C, so the Flower processes started here stop too."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def stop(process: subprocess.Popen | None, grace: float = 10) -> None:
    """Stop a process from :func:`launch` and every helper it started."""
    if process is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
            if sig == signal.SIGTERM:
                time.sleep(0.2)  # let helpers see the signal too before the group is killed
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Server:
    """``fedbcs serve``: a SuperLink and one run submitted to it."""

    home: Path
    host: str = "0.0.0.0"
    port: int = 8000
    tls: Tls | None = None
    site_keys: tuple[SiteKey, ...] = ()  # the sites allowed in, each with its key (node auth)

    def run(self, run_config: dict[str, object]) -> dict[str, str]:
        """Register the sites' keys, start the SuperLink, run the server app until it
        ends, stop the SuperLink; return the run's outcome (``status``, ``message``)."""
        _stop_on_sigterm()
        self.home.mkdir(parents=True, exist_ok=True)
        env = environment(self.home)
        env.setdefault("FLWR_LOG_LEVEL", "WARNING")  # the run's own progress lines, not Flower's
        app = write_app(self.home)
        site_nodes = self.register(env) if self.site_keys else {}
        write_connection(self.home, self.port, self.tls)
        outcome_file = self.home / "outcome.json"
        outcome_file.unlink(missing_ok=True)
        overrides = self.home / "run-config.toml"
        values = {**run_config, "outcome-file": str(outcome_file),
                  "site-nodes": json.dumps(site_nodes)}  # fmt: skip
        overrides.write_text("".join(f"{_toml(k)} = {_toml(v)}\n" for k, v in values.items()))
        link = self.start(self.host, self.port, env)
        try:
            flwr = subprocess.run(
                ["flwr", "run", str(app), CONNECTION, "--stream", "--run-config", str(overrides)],
                env=env,
            )
            if outcome_file.is_file():
                return json.loads(outcome_file.read_text())
            return {
                "status": "failed",
                "message": f"the server app ended without an outcome (flwr run exited with "
                f"{flwr.returncode}); the SuperLink's log {self.log} ends with:\n{_tail(self.log)}",
            }
        finally:
            stop(link)

    @property
    def log(self) -> Path:
        return self.home / "superlink.log"

    def start(self, host: str, port: int, env: dict[str, str]) -> subprocess.Popen:
        command = superlink_command(host, port, self.home, self.tls, bool(self.site_keys))
        with self.log.open("ab") as out:
            link = launch(command, env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, link, self.log)
        except BaseException:
            stop(link)
            raise
        return link

    def register(self, env: dict[str, str]) -> dict[str, int]:
        """Register the sites' public keys in the SuperLink's database before any site can
        dial it: on a private port of 127.0.0.1, with a SuperLink stopped afterwards (the
        database keeps the keys), so no site is refused for knocking too early. Returns
        each site's node ID (what its key makes it), kept in ``site-nodes.json`` for keys
        registered by an earlier start."""
        check_site_keys(self.site_keys)
        known_file = self.home / "site-nodes.json"
        known = json.loads(known_file.read_text()) if known_file.is_file() else {}
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            private = probe.getsockname()[1]
        write_connection(self.home, private, self.tls)
        link = self.start("127.0.0.1", private, env)
        nodes: dict[str, int] = {}
        try:
            for key in self.site_keys:
                done = subprocess.run(
                    ["flwr", "supernode", "register", str(key.path), CONNECTION,
                     "--format", "json"],
                    env=env, capture_output=True, text=True,
                )  # fmt: skip
                said = done.stdout + done.stderr
                found = re.search(r'"node-id":\s*"?(-?\d+)', said)
                if done.returncode == 0 and found:
                    nodes[key.name] = int(found.group(1))
                elif "already" in said.lower() and key.fingerprint() in known:
                    nodes[key.name] = int(known[key.fingerprint()])
                elif "already" in said.lower():
                    raise DeployError(
                        f"site key {key.path} is registered in {self.home / 'superlink.db'} "
                        "by an older start that did not record its site; remove that file "
                        "to register every site afresh"
                    )
                else:
                    raise DeployError(f"registering site key {key.path} failed:\n{said}")
        finally:
            stop(link)
        known.update({key.fingerprint(): nodes[key.name] for key in self.site_keys})
        from fedbcs_lightning.io import atomic_write_json

        atomic_write_json(known_file, known)
        return nodes


#: What the SuperNode prints when the SuperLink refuses its key (it then exits).
REFUSED = "Failed to activate SuperNode"


def join(
    superlink: str,
    node_config: dict[str, str],
    home: Path,
    port: int = 9094,
    ca: Path | None = None,
    private_key: Path | None = None,
    max_wait: float | None = None,
    say=print,
) -> int:
    """``fedbcs join``: run this site's SuperNode until Ctrl-C (exit code 130), starting
    it again whenever it stops (a restarted server forgets the nodes it knew), unless
    ``max_wait`` is given: then it ends with the SuperNode's exit code.

    Without ``max_wait``, a refused key is tried again every 15 s for 120 s: the server
    may not have registered it yet, or a crashed session of this site may not have expired
    yet (about a minute). With it, the SuperNode itself gives up after ``max_wait``
    seconds. Still refused, it exits with code 3."""
    _stop_on_sigterm()
    home.mkdir(parents=True, exist_ok=True)
    command = supernode_command(superlink, node_config, port, ca, private_key, max_wait)
    deadline = time.monotonic() + (0 if max_wait else 120)
    node = None
    try:
        while True:
            node = launch(command, environment(home), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")  # fmt: skip
            said: list[bool] = []
            relay = threading.Thread(target=_relay, args=(node.stdout, said), daemon=True)
            relay.start()
            code = node.wait()
            stop(node)  # its helpers outlive it otherwise
            relay.join(5)
            if not said:
                if max_wait:  # it gave up reaching the server, as asked
                    return code
                # e.g. a restarted server that no longer knows this node: join it again
                say(f"the SuperNode stopped (exit code {code}); starting it again in 5 s")
                time.sleep(5)
                continue
            if time.monotonic() > deadline:
                say(f"the server refused this site's key {private_key}: is its .pub file "
                    "among the server's --site-key options, with this site's name?")  # fmt: skip
                return 3
            say("the server refused this site's key for now; trying again in 15 s")
            time.sleep(15)
    except KeyboardInterrupt:
        return 130
    finally:
        stop(node)


def _relay(stream, refused: list[bool]) -> None:
    """Pass the SuperNode's log on, noting a refusal of its key."""
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        if REFUSED in line and not refused:
            refused.append(True)
