"""The README and the documentation say what the code does: every Python example runs,
every ``fedbcs`` command parses against the command line as it is, and the site builds.

A block that cannot run here is preceded by ``<!-- not run: REASON -->``."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(
    r"(<!-- not run: (?P<reason>.+?) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)```", re.S
)


def blocks(lang: str):
    for page in PAGES:
        for match in BLOCK.finditer(page.read_text()):
            if match["lang"] == lang:
                yield page.relative_to(ROOT), match["code"], match["reason"]


def commands():
    """Each ``fedbcs ...`` command of the bash blocks, continuation lines joined."""
    for page, code, reason in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            words, parts = list(lexer), [[]]
            for word in words:
                if set(word) <= set(";&|"):
                    parts.append([])
                else:
                    parts[-1].append(word)
            for part in parts:
                if part and part[0].endswith("fedbcs"):
                    shown = " ".join(part)[:60]
                    yield pytest.param(part[1:], reason, id=f"{page}: {shown}")


@pytest.mark.parametrize(("args", "reason"), list(commands()))
def test_every_command_in_the_docs_parses(args, reason):
    import click
    import typer.main

    from fedbcs_cli.main import app

    if reason:
        pytest.skip(reason)
    group = typer.main.get_command(app)
    if not args or args[0].startswith("--"):
        assert args in ([], ["--version"], ["--help"]), args
        return
    command = group.get_command(None, args[0])
    assert command is not None, f"no command {args[0]!r}"
    try:
        command.make_context(args[0], list(args[1:]), resilient_parsing=False)
    except click.exceptions.Exit:
        pass
    except click.UsageError as err:
        pytest.fail(f"fedbcs {' '.join(args)}: {err.format_message()}")


def python_blocks():
    for page, code, reason in blocks("python"):
        name = re.sub(r"\W+", "-", code.strip().splitlines()[0])[:40]
        yield pytest.param(code, reason, id=f"{page}: {name}")


@pytest.mark.parametrize(("code", "reason"), list(python_blocks()))
def test_every_python_example_runs(code, reason, tmp_path, monkeypatch):
    """Each block runs as its own script, in an empty folder (a fresh process: examples
    that register a backbone or a method do not leak into other tests)."""
    if reason:
        pytest.skip(reason)
    script = tmp_path / "example.py"
    if "TestCase" in code or "Contract)" in code:  # a test module: pytest runs it
        support = [b for _, b, _ in blocks("python") if "@BACKBONES.register" in b or
                   "@METHODS.register" in b]  # fmt: skip
        (tmp_path / "plugin_examples.py").write_text("\n".join(support))
        (tmp_path / "test_example.py").write_text("import plugin_examples  # noqa\n" + code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "."]
    else:
        script.write_text(code)
        command = [sys.executable, str(script)]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; details belong in docs/"


def test_the_documentation_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link, a missing page or a docstring the
    reference cannot render fails (CI runs the same)."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for page in ("cli/fit/index.html", "configuration/index.html", "reference/api/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
