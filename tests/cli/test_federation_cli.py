"""`fedbcs serve` and `fedbcs join` refuse unsafe or broken options before starting any
process (the deployment itself: tests/flower/test_deployment.py)."""

import pytest
from typer.testing import CliRunner

from fedbcs_cli.main import app

pytest.importorskip("flwr", reason="Flower is not installed (pip install '.[flower]')")
runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve"], "TLS needs --ca, --cert, --key (or --insecure"),
        (["serve", "--insecure", "--ca", "ca.crt"], "--insecure turns TLS off; drop --ca"),
        (["serve", "--insecure", "--site-key", "a.pub"],
         "--site-key (site authentication) needs TLS"),
        (["serve", "--ca", "no.crt", "--cert", "no.pem", "--key", "no.key"],
         "--ca no.crt: no such file"),
        (["join", "--server", "h:8000", "--site", "a"], "TLS needs --ca (or --insecure"),
        (["serve", "--insecure", "--resume", "run", "--rounds", "5", "--method", "fedbn"],
         "--resume continues the saved configuration; drop --method, --rounds"),
        (["join", "--server", "h:8000", "--site", "a", "--insecure", "--data-root", "/nope"],
         "--data-root /nope: no such folder"),
    ],
)  # fmt: skip
def test_unsafe_or_broken_options_are_refused_before_anything_starts(args, message, tmp_path):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_serve_refuses_a_bad_config_before_starting_flower(tmp_path):
    result = runner.invoke(
        app, ["serve", "--insecure", "--method", "nope", "--home", str(tmp_path / "home")]
    )
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output
    assert not (tmp_path / "home").exists()


@pytest.fixture
def credentials(tmp_path):
    from tests.flower.deployment import make_credentials

    return make_credentials(tmp_path / "creds", ["site-a", "site-b"])


def join(*args: str):
    result = runner.invoke(app, ["join", "--server", "127.0.0.1:9", "--site", "a", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


def test_a_site_names_the_tls_file_that_is_wrong(credentials, tmp_path):
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    said = join("--ca", str(garbage))
    assert f"--ca {garbage}: not a PEM certificate" in said
    said = join("--ca", str(credentials["ca"]), "--key", str(credentials["cert"]))
    assert f"--key {credentials['cert']}: a certificate, not a private key" in said
    said = join("--ca", str(credentials["ca"]), "--key", str(credentials["ca"].with_name("nope")))
    assert "no such file" in said
    mixed = tmp_path / "site-a"
    mixed.write_bytes(credentials["site-a"].read_bytes())
    mixed.with_name("site-a.pub").write_bytes(credentials["site-b.pub"].read_bytes())
    said = join("--ca", str(credentials["ca"]), "--key", str(mixed))
    assert f"--key {mixed} does not match its public key {mixed}.pub" in said


def test_the_server_refuses_its_own_mismatched_tls_files(credentials, tmp_path):
    other = tmp_path / "other"
    from tests.flower.deployment import make_credentials

    stranger = make_credentials(other, [])
    args = ["serve", "--ca", str(credentials["ca"]), "--cert", str(credentials["cert"])]
    result = runner.invoke(app, [*args, "--key", str(stranger["key"]), "--home", str(tmp_path)])
    assert result.exit_code == 2 and "is not the private key of --cert" in result.output


def _server(context=None):
    """A listener on 127.0.0.1 that speaks TLS with ``context`` (plain TCP without one)
    to every client, in a thread; returns its port."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            try:
                if context is not None:
                    connection = context.wrap_socket(connection, server_side=True)
                else:
                    connection.recv(1024)
                    connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            except OSError:
                pass
            finally:
                connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_a_site_says_when_its_tls_setting_does_not_fit_the_servers(credentials, tmp_path):
    import ssl

    from fedbcs_lightning.flower.credentials import DeployError, probe_server
    from tests.flower.deployment import make_credentials

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(credentials["cert"], credentials["key"])
    tls, plain = _server(context), _server()
    try:
        tls_at = f"127.0.0.1:{tls.getsockname()[1]}"
        plain_at = f"127.0.0.1:{plain.getsockname()[1]}"
        with pytest.raises(
            DeployError, match=r"uses TLS, and this site was started with --insecure"
        ):
            probe_server(tls_at, None)
        with pytest.raises(DeployError, match=r"does not speak TLS .* join with --insecure"):
            probe_server(plain_at, credentials["ca"])
        stranger = make_credentials(tmp_path / "stranger", [])["ca"]
        with pytest.raises(DeployError, match=rf"--ca {stranger} does not verify"):
            probe_server(tls_at, stranger)
        probe_server(tls_at, credentials["ca"])  # the right CA: no complaint
        probe_server(plain_at, None)
        probe_server("127.0.0.1:9", None)  # nothing listening yet: the site waits for it
        result = runner.invoke(app, ["join", "--server", tls_at, "--site", "a", "--insecure"])
        assert result.exit_code == 2 and "uses TLS" in result.output
    finally:
        tls.close()
        plain.close()
