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
