"""``stars serve model``: registered under an existing ``serve`` sub-command.

    serve = sub.add_parser("serve", ...).add_subparsers(dest="serve_command", required=True)
    add_serve_model_parser(serve)        # stars serve model --model-base-path DIR ...
"""
from __future__ import annotations

import argparse

from serving.model_server import server


def run_serve_model(args: argparse.Namespace) -> int:
    """The sub-command's ``func``: execs ``tensorflow_model_server`` if on PATH (unless
    ``--no-native``), else serves until SIGINT/SIGTERM.  Returns the exit code."""
    return server.run(args)


def add_serve_model_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``model`` to the ``serve`` subparsers; sets ``func=run_serve_model``."""
    parser = subparsers.add_parser(
        "model", help="serve the pushed models with the TF Serving REST/gRPC APIs",
        description=server.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    server.add_arguments(parser)
    parser.set_defaults(func=run_serve_model)
    return parser


__all__ = ["add_serve_model_parser", "run_serve_model"]
