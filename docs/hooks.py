"""MkDocs hooks: the pages that are generated from the code, so that they cannot drift.

- ``cli/<command>.md``: each command's ``--help``, from the typer app;
- ``configuration.md``: every key of every section with its type, default and meaning,
  from the schema's dataclasses, and the options every registered method and backbone
  declares;
- ``getting-started/notebook.md``: the quickstart notebook, rendered;
- ``benchmarks/results/**``: the results the benchmark scripts wrote (tables, plots),
  which the results pages link to;
- ``<!-- options: NAME -->`` in a page: the options table of method ``NAME``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import typing
import warnings
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for path, content in generated_pages().items():
        files.append(File.generated(config, path, content=content))
    for path in sorted((ROOT / "benchmarks" / "results").rglob("*")):
        if path.is_file() and path.suffix in (".md", ".png"):
            uri = path.relative_to(ROOT).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    markdown = re.sub(
        r"<!-- options: ([\w-]+) -->", lambda m: options_table(m.group(1), m.group(1)), markdown
    )
    depth = page.file.src_uri.count("/")
    markdown = re.sub(r"<!-- include: (\S+) -->", lambda m: included(m.group(1), depth), markdown)
    return re.sub(
        r"<!-- provenance: (.+?) -->", lambda m: provenance(m.group(1).split(), depth), markdown
    )


def included(path: str, depth: int) -> str:
    """A results file the benchmark scripts wrote (its tables come from their JSON),
    pasted into the page at build time; its image links made relative to the page."""
    text = (ROOT / path).read_text()
    folder = Path(path).parent.as_posix()
    return re.sub(
        r"!\[([^\]]*)\]\(([^)/]+\.png)\)",
        lambda m: f"![{m.group(1)}]({'../' * depth}{folder}/{m.group(2)})",
        text,
    )


# -- where results come from ----------------------------------------------------------------
def _last_commit(path: str) -> tuple[str, str]:
    import subprocess

    done = subprocess.run(
        ["git", "log", "-1", "--format=%h %ad", "--date=short", "--", path],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    parts = done.stdout.split()
    return (parts[0], parts[1]) if done.returncode == 0 and len(parts) == 2 else ("", "")


def provenance(paths: list[str], depth: int) -> str:
    """A table of results files: the date and commit that last wrote each (from git)."""
    if paths == ["all"]:
        found = sorted((ROOT / "benchmarks" / "results").rglob("*.md"))
        paths = [p.relative_to(ROOT).as_posix() for p in found]
    rows = []
    for path in paths:
        commit, date = _last_commit(path)
        link = f"[`{path}`]({'../' * depth}{path})"
        rows.append(f"| {link} | {date or 'not committed'} | `{commit}` |" if commit else
                    f"| {link} | not committed | |")  # fmt: skip
    return (
        "| results file (tables, curves, plot) | written | commit |\n|---|---|---|\n"
        + "\n".join(rows)
    )


# -- the command line ---------------------------------------------------------------------
def generated_pages() -> dict[str, str]:
    pages = {f"cli/{name}.md": text for name, text in command_pages().items()}
    pages["cli/index.md"] = cli_index()
    pages["configuration.md"] = configuration_page()
    pages["getting-started/notebook.md"] = notebook_page(ROOT / "notebooks" / "quickstart.ipynb")
    return pages


@functools.cache
def _commands():
    with warnings.catch_warnings():  # typer's own use of click's deprecated names
        warnings.simplefilter("ignore", DeprecationWarning)
        import typer.main

        from fedbcs_cli.main import app

    group = typer.main.get_command(app)
    return group, {name: group.get_command(None, name) for name in group.list_commands(None)}


def command_pages() -> dict[str, str]:
    import click

    group, commands = _commands()
    pages = {}
    for name, command in commands.items():
        with click.Context(command, info_name=f"fedbcs {name}") as ctx:
            text = command.get_help(ctx)
        summary = (command.help or "").strip().splitlines()[0] if command.help else ""
        pages[name] = (
            f"# fedbcs {name}\n\n{summary}\n\nGenerated from the command line itself "
            f"(`fedbcs {name} --help`):\n\n```text\n{text}\n```\n"
        )
    return pages


def cli_index() -> str:
    _, commands = _commands()
    rows = "\n".join(
        f"| [`fedbcs {name}`]({name}.md) | {(c.help or '').strip().splitlines()[0]} |"
        for name, c in commands.items()
    )
    return (
        "# Command line\n\nEvery command prints its options with `--help`; these pages are "
        "generated from the same source.\n\n| command | what it does |\n|---|---|\n"
        f"{rows}\n\n`fedbcs --version` prints the version.\n"
    )


# -- configuration ------------------------------------------------------------------------
def _comments(cls) -> dict[str, str]:
    """The ``# ...`` comment after each field in the class's source, or the comment
    lines just above it."""
    found, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        match = re.match(r"\s+(\w+): [^=]+= .*?(?:#\s*(.+))?$", line)
        if match:
            found[match.group(1)] = (match.group(2) or " ".join(above)).strip()
        above = []
    return found


def _type(hint) -> str:
    text = str(hint).replace("typing.", "")
    return re.sub(r"<class '(\w+)'>", r"\1", text)


def _default(field) -> str:
    if field.default is not dataclasses.MISSING:
        return json.dumps(field.default)
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section)"
        return json.dumps(value)
    return ""


def fields_table(cls, prefix: str) -> str:
    hints = typing.get_type_hints(cls)
    notes = _comments(cls)
    doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    if doc.startswith(f"{cls.__name__}("):  # the signature a dataclass gets without a docstring
        doc = ""
    rows = []
    for field in dataclasses.fields(cls):
        if field.name == "methods":
            continue
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            continue
        note = notes.get(field.name, "").replace("|", "\\|")
        rows.append(f"| `{prefix}{field.name}` | `{_type(hint)}` | `{_default(field)}` | {note} |")
    head = "| key | type | default | meaning |\n|---|---|---|---|\n"
    return (f"{doc}\n\n" if doc else "") + head + "\n".join(rows)


def options_table(method: str, section: str) -> str:
    from fedbcs_lightning.catalog import METHODS

    options = METHODS.options(method)
    if options is None:
        return f"Method `{method}` has no options of its own."
    return fields_table(options, f"{section}.")


def configuration_page() -> str:
    from fedbcs_lightning.catalog import BACKBONES, METHODS
    from fedbcs_lightning.config.schema import Config

    parts = [
        "# Configuration\n",
        "Generated from the schema (`fedbcs_lightning.config.schema`) and from the options "
        "each method and backbone registers. A value comes from, lowest first: these "
        "defaults, the data set's own defaults (`fedbcs config --dataset fundus` prints "
        "them), a preset or YAML file (`--config`), `--set section.key=value`, then the "
        "command's options. Unknown keys and bad values are errors that name the key.\n",
    ]
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        if field.name == "methods":
            continue
        section = hints[field.name]
        parts.append(f"## `{field.name}`\n\n{fields_table(section, field.name + '.')}\n")
        for sub in dataclasses.fields(section):
            sub_hint = typing.get_type_hints(section)[sub.name]
            if dataclasses.is_dataclass(sub_hint):
                name = f"{field.name}.{sub.name}"
                parts.append(f"### `{name}`\n\n{fields_table(sub_hint, name + '.')}\n")
    parts.append(
        "## Method options\n\nEach method with options reads the section named after it "
        "(`fedbcs:` in YAML, `--set fedbcs.cdpa=true`).\n"
    )
    for name in METHODS.names():
        if METHODS.options(name) is not None:
            parts.append(f"### `{name}`\n\n{options_table(name, name)}\n")
    parts.append(
        "## Backbone options\n\nA backbone's own options live in `model.options` and reach "
        "its constructor. The built-in backbones read `model.width`, `model.norm`, "
        "`model.encoder` and `model.encoder_weights` instead.\n"
    )
    for name in BACKBONES.names():
        options = BACKBONES.options(name)
        if options is not None:
            parts.append(f"### `{name}`\n\n{fields_table(options, 'model.options.')}\n")
    return "\n".join(parts)


# -- the notebook -------------------------------------------------------------------------
def notebook_page(path: Path) -> str:
    notebook = json.loads(path.read_text())
    out = []
    for cell in notebook["cells"]:
        source = "".join(cell.get("source", []))
        if cell["cell_type"] == "markdown":
            out.append(source)
        elif cell["cell_type"] == "code":
            out.append(f"```python\n{source}\n```")
            for output in cell.get("outputs", []):
                text = "".join(output.get("text", [])) or "".join(
                    output.get("data", {}).get("text/plain", [])
                )
                if text.strip():
                    out.append(f"```text\n{text.rstrip()}\n```")
    body = "\n\n".join(out)
    if not body.lstrip().startswith("# "):
        body = "# Quickstart notebook\n\n" + body
    return body + f"\n\n*Rendered from `{path.relative_to(ROOT)}`.*\n"
