"""``stars batch ...`` commands.

    stars batch user-embeddings --model-base-path DIR [--version N] --data-dir DIR
        --store embedded:PATH|redis://host:port/db [--as-of TIMESTAMP] [--max-history 200]
        [--batch-size 256] [--grace-seconds S] [--beam-arg ARG ...]

Wire into the top-level parser with ``add_batch_parser(subparsers)``.
"""
from __future__ import annotations

import json


def _user_embeddings(args) -> int:
    from serving.batch import job
    report = job.run(args.model_base_path, args.data_dir, args.store, version=args.version,
                     as_of=args.as_of, max_history=args.max_history,
                     batch_size=args.batch_size, beam_args=args.beam_arg,
                     grace_seconds=args.grace_seconds)
    print(json.dumps(report, indent=2, sort_keys=True, default=str))
    return 0


def add_batch_parser(subparsers):
    """Adds ``batch`` (with ``user-embeddings``) to the top-level ``subparsers``; returns
    the ``batch`` parser.  Each command sets ``func(args) -> exit code``."""
    batch = subparsers.add_parser("batch", help="batch jobs for serving (user embeddings)")
    sub = batch.add_subparsers(dest="batch_command", required=True)
    p = sub.add_parser(
        "user-embeddings",
        help="h_gen/h_next of every user into a key-value store (Apache Beam)",
        description="Embeds every user's recent history with the pushed serving model's "
                    "user_embeddings signature and swaps a new generation into the store "
                    "atomically (the base embeddings, without the context offset).")
    p.add_argument("--model-base-path", required=True,
                   help="pushed model base path (<base>/<version>/saved_model.pb)")
    p.add_argument("--version", type=int, default=None,
                   help="model version (default: the highest)")
    p.add_argument("--data-dir", required=True, help="data directory (the data contract)")
    p.add_argument("--store", required=True,
                   help="embedded:PATH (default backend) or redis://host:port/db")
    p.add_argument("--as-of", default=None,
                   help="unix seconds or ISO-8601: ignore later events and embed as of "
                        "this time (default: the latest event in the data)")
    p.add_argument("--max-history", type=int, default=200,
                   help="latest events kept per user")
    p.add_argument("--batch-size", type=int, default=256, help="users per model call")
    p.add_argument("--grace-seconds", type=float, default=None,
                   help="wait before removing the superseded generation (default 5)")
    p.add_argument("--beam-arg", action="append", default=None,
                   help="Beam pipeline argument, repeatable (default: DirectRunner in memory)")
    p.set_defaults(func=_user_embeddings)
    return batch


__all__ = ["add_batch_parser"]
