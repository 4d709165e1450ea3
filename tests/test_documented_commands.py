"""Every ``stars ...`` command line written in the docs, docstrings and deploy files uses
flags the command really has: help text that drifts from the parser fails here."""
import argparse
import pathlib
import re

import pytest

from cli.main import build_parser

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "BUILD_NOTES.md", "benchmarks/README.md", "Makefile", "Dockerfile"]
SOURCES = ["cli", "stars", "serving", "pipeline", "components", "models", "evaluation",
           "benchmarks", "deploy"]
COMMAND = re.compile(r"\bstars ((?:data|pipeline|serve|batch|index|catalog|eval|demo)\b.*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")


def _documented_lines():
    paths = [REPO / d for d in DOCUMENTS]
    for top in SOURCES:
        paths += sorted(p for p in (REPO / top).rglob("*")
                        if p.suffix in (".py", ".md", ".yaml", ".yml") and p.is_file())
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            match = COMMAND.search(line)
            if not match:
                continue
            text = match.group(1)
            if line[:match.start()].endswith("`"):  # inline code: the command ends with it
                text = text.split("`")[0]
            while text.rstrip().endswith("\\") and n + 1 < len(lines):  # continued lines
                n += 1
                text = text.rstrip()[:-1] + " " + lines[n]
            if FLAG.search(text):
                yield f"{path.relative_to(REPO)}:{n + 1}", text


def _subparser(parser: argparse.ArgumentParser, words):
    """The parser of ``stars <words...>`` (as deep as the words name subcommands)."""
    for word in words:
        choices = next((a.choices for a in parser._actions
                        if isinstance(a, argparse._SubParsersAction)), None)
        if not choices or word not in choices:
            break
        parser = choices[word]
    return parser


CASES = list(_documented_lines())


def test_the_docs_show_commands():
    assert len(CASES) >= 20  # the scan finds the README's and the CLI's usage lines


@pytest.mark.parametrize("where, text", CASES, ids=[w for w, _ in CASES])
def test_documented_flags_exist(where, text):
    words = re.findall(r"[a-z][a-z-]*", text.split("--")[0])
    parser = _subparser(build_parser(), words)
    known = set(parser._option_string_actions)
    flags = [f for f in FLAG.findall(text.split("=")[0] if "--beam-arg=" in text else text)]
    unknown = [f for f in flags if f not in known]
    assert not unknown, f"{where}: `stars {' '.join(words[:2])}` has no {unknown}"
