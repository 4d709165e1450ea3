"""Command-line entry points of the sidecar, to be wired into ``cli/main.py``:

    stars serve sidecar --data-dir DIR [--model-url grpc://localhost:8500] ...
    stars index items --data-dir DIR --es-hosts http://localhost:9200 [--alias stars-items]

``add_serve_sidecar_parser(serve_subparsers)`` and ``add_index_items_parser(index_subparsers)``
add the sub-commands (each sets ``func``, which returns an exit code).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str), flush=True)


def _es_client(args):
    from serving.sidecar.elasticsearch_backend import make_client
    kwargs: dict[str, Any] = {}
    api_key = os.environ.get(args.es_api_key_env) if args.es_api_key_env else None
    if api_key:
        kwargs["api_key"] = api_key
    if getattr(args, "es_ca_certs", ""):
        kwargs["ca_certs"] = args.es_ca_certs
    return make_client(args.es_hosts, **kwargs)


def _add_es_options(parser, hosts_required: bool) -> None:
    parser.add_argument("--es-hosts", required=hosts_required, default="",
                        help="Elasticsearch URL(s), comma-separated (http://localhost:9200)")
    parser.add_argument("--es-alias", "--alias", dest="es_alias", default="stars-items",
                        help="index alias holding the item documents")
    parser.add_argument("--es-api-key-env", default="ELASTICSEARCH_API_KEY",
                        help="environment variable holding an API key (if set)")
    parser.add_argument("--es-ca-certs", default="", help="CA bundle for https")


def with_socket_timeouts(location: str, timeout_ms: float) -> str:
    """A Redis URL with connect and socket timeouts (unless it names its own): a hung
    Redis then costs a request ``timeout_ms``, not as long as it hangs."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    if not location.startswith(("redis://", "rediss://", "unix://")):
        return location
    parts = urlsplit(location)
    query = dict(parse_qsl(parts.query))
    for name in ("socket_timeout", "socket_connect_timeout"):
        query.setdefault(name, f"{timeout_ms / 1000.0:g}")
    return urlunsplit(parts._replace(query=urlencode(query)))


def build_app(args):
    """The SidecarApp for parsed ``serve sidecar`` arguments (no socket opened)."""
    from serving.sidecar.api import ApiConfig, SidecarApp
    from serving.sidecar.elasticsearch_backend import ElasticsearchFilterBackend
    from serving.sidecar.filters import EmbeddedFilterBackend, FilterBackend
    from serving.sidecar.model_client import make_model_client
    from serving.sidecar.popularity import ModelPopularity, Popularity
    from serving.sidecar.recommender import Recommender, RecommenderConfig
    from serving.sidecar.user_store import load_user_store

    release_dir = getattr(args, "release_dir", "")
    if release_dir:
        from stars import release as releases
        if args.popularity_counts:
            raise ValueError("--popularity-counts and --release-dir exclude each other: a "
                             "release serves its own model's ranking")
        first = releases.current(release_dir)
        if first is None:
            raise ValueError(f"--release-dir {release_dir}: no release yet (run the pipeline "
                             "or `stars catalog refresh` first)")
        catalog = EmbeddedFilterBackend.from_catalog(first.catalog_dir)
    elif args.data_dir:
        catalog = EmbeddedFilterBackend.from_catalog(args.data_dir)
    else:
        raise ValueError("give --release-dir (the pipeline's releases) or --data-dir (a "
                         "catalogue without releases)")
    popularity = Popularity.load(catalog, args.popularity_counts or None)
    backend: FilterBackend
    if args.filter_backend == "elasticsearch":
        if not args.es_hosts:
            raise ValueError("--filter-backend elasticsearch needs --es-hosts")
        backend = ElasticsearchFilterBackend(_es_client(args), args.es_alias,
                                             timeout_s=args.filter_timeout_ms / 1000.0)
    else:
        backend = catalog
    store = load_user_store(args.user_store_factory,
                            with_socket_timeouts(args.user_store, args.user_store_timeout_ms)) \
        if args.user_store else None
    model = make_model_client(args.model_url, args.model_name, args.model_timeout_ms / 1000.0,
                              version_label=getattr(args, "model_version_label", "") or None)
    config = RecommenderConfig(
        overfetch=args.overfetch, growth=args.growth, max_fetch=args.max_fetch,
        model_timeout_s=args.model_timeout_ms / 1000.0,
        filter_timeout_s=args.filter_timeout_ms / 1000.0, budget_s=args.budget_ms / 1000.0,
        filter_failure=args.filter_failure,
        backend_cooldown_s=args.backend_cooldown_ms / 1000.0)
    names = tuple(n.strip() for n in args.signal_names.split(",") if n.strip())
    api = ApiConfig(max_k=args.max_k, max_events=args.max_events,
                    max_body_bytes=args.max_body_bytes, signal_names=names,
                    require_filter_ready=args.require_filter_ready,
                    body_timeout_s=args.body_timeout_ms / 1000.0,
                    max_inflight=args.max_inflight, threads=args.threads,
                    admission=args.admission,
                    latency_target_s=args.latency_target_ms / 1000.0)
    app = SidecarApp(Recommender(model, backend, popularity, store, config), api)
    if release_dir:  # model version, catalogue and ranking switch together
        from serving.sidecar.release import ReleaseFollower
        follower = ReleaseFollower(app.recommender, model, release_dir,
                                   refresh_s=args.release_poll_ms / 1000.0)
        follower.load_first()
        app.popularity_source = follower.start()
    elif not args.popularity_counts:  # the ranking that ships with the served model
        app.popularity_source = ModelPopularity(app.recommender, model, catalog,
                                                refresh_s=args.popularity_refresh_s).start()
    return app


def http_config(args):
    from serving.sidecar.server import HttpConfig
    return HttpConfig(head_timeout_s=args.head_timeout_ms / 1000.0,
                      keep_alive_s=args.keep_alive_ms / 1000.0,
                      max_connections=args.max_connections,
                      graceful_timeout_s=args.graceful_timeout_ms / 1000.0,
                      drain_s=args.drain_ms / 1000.0, workers=args.workers,
                      reuse_port=args.reuse_port)


def app_from_environment():
    """The app of one worker process (``server.run`` with several workers): built from
    the parsed ``serve sidecar`` arguments the parent left in ``ARGS_ENV``."""
    from serving.sidecar.asgi import SidecarASGI
    from serving.sidecar.server import ARGS_ENV
    args = argparse.Namespace(**json.loads(os.environ[ARGS_ENV]))
    return SidecarASGI(build_app(args), drain_s=http_config(args).drain_s)


def _serve_sidecar(args) -> int:
    from serving.sidecar.server import run
    http = http_config(args)
    app = build_app(args)  # also checks the arguments before any worker starts
    _print({"sidecar": f"http://{args.host}:{args.port}", "model": args.model_url,
            "filter_backend": args.filter_backend, "filter_failure": args.filter_failure,
            "workers": http.workers,
            "catalogue_items": len(app.recommender.popularity.catalog)})
    plain = {k: v for k, v in vars(args).items() if k != "func"}
    run(app if http.workers <= 1 else None, plain, args.host, args.port, http)
    return 0


def add_serve_sidecar_parser(serve_subparsers):
    p = serve_subparsers.add_parser(
        "sidecar", help="HTTP JSON recommendation API in front of TF Serving",
        description="POST /v1/recommendations, /healthz, /readyz, /metrics "
                    "(see serving/sidecar/openapi.yaml)")
    p.add_argument("--release-dir", default="",
                   help="the pipeline's release directory (<pipeline root>/releases): serve "
                        "its live release -- model version, catalogue and popularity switch "
                        "together once the model server serves the new version")
    p.add_argument("--release-poll-ms", type=float, default=1000.0,
                   help="how often --release-dir is checked for a new release")
    p.add_argument("--data-dir", default="",
                   help="without --release-dir: data directory with the catalogue "
                        "(items.csv / items.parquet), served with the newest model version")
    p.add_argument("--model-url", default="grpc://localhost:8500",
                   help="grpc://HOST:PORT (TF Serving gRPC) or http://HOST:PORT (REST)")
    p.add_argument("--model-name", default="stars")
    p.add_argument("--model-version-label", default="",
                   help="ask for this version label of the model server's model config "
                        "(e.g. stable) instead of the latest version, except for stored "
                        "embeddings, which keep their own version")
    p.add_argument("--popularity-counts", default="",
                   help="item counts: Transform 'item_popularity' vocabulary or item_id,count "
                        "CSV (default: the served model's own ranking, its popular_items "
                        "signature, reloaded when the served version changes)")
    p.add_argument("--popularity-refresh-s", type=float, default=30.0,
                   help="how often the served version is checked for a new ranking")
    p.add_argument("--filter-backend", default="embedded", choices=["embedded", "elasticsearch"])
    _add_es_options(p, hosts_required=False)
    p.add_argument("--filter-failure", default="snapshot",
                   choices=["snapshot", "closed", "open"],
                   help="when the filter backend is down or slow: apply the filters to the "
                        "catalogue snapshot of --data-dir (snapshot, the default), serve only "
                        "already-filtered items (closed), or serve unfiltered candidates "
                        "(open: breaks stock and region rules; degraded)")
    p.add_argument("--backend-cooldown-ms", type=float, default=500.0,
                   help="after a failure, the filter backend and the user store are not "
                        "asked again for this long (circuit breaker)")
    p.add_argument("--user-store", default="",
                   help="the batch job's user-embedding store: embedded:PATH or "
                        "redis://host:port/db (none: every user is encoded from events)")
    p.add_argument("--user-store-factory", default="serving.batch.stores:open_store",
                   help="module:callable that opens --user-store")
    p.add_argument("--user-store-timeout-ms", type=float, default=50.0,
                   help="connect and socket timeout of a redis:// user store (a URL's own "
                        "socket_timeout / socket_connect_timeout win)")
    p.add_argument("--model-timeout-ms", type=float, default=50.0)
    p.add_argument("--filter-timeout-ms", type=float, default=50.0)
    p.add_argument("--budget-ms", type=float, default=200.0, help="whole-request budget")
    p.add_argument("--overfetch", type=float, default=4.0)
    p.add_argument("--growth", type=float, default=2.0)
    p.add_argument("--max-fetch", type=int, default=1000)
    p.add_argument("--max-k", type=int, default=200)
    p.add_argument("--max-events", type=int, default=200)
    p.add_argument("--max-body-bytes", type=int, default=64 * 1024)
    p.add_argument("--signal-names", default="event,weather,promotion,extra",
                   help="names of the model's context_signals slots, in order")
    p.add_argument("--require-filter-ready", action="store_true",
                   help="/readyz fails while the filter backend is down")
    p.add_argument("--max-inflight", type=int, default=64,
                   help="recommendations in progress per process; more are refused at once "
                        "with 429 + Retry-After (load shedding)")
    p.add_argument("--admission", default="adaptive", choices=["adaptive", "fixed"],
                   help="adaptive: the cap shrinks while answers come later than "
                        "--latency-target-ms and grows back when they are in time; fixed: "
                        "always --max-inflight")
    p.add_argument("--latency-target-ms", type=float, default=0.0,
                   help="the adaptive cap's latency target (0: half of --budget-ms)")
    p.add_argument("--threads", type=int, default=16,
                   help="recommendation flows running at once per process")
    p.add_argument("--workers", type=int, default=1,
                   help="sidecar processes sharing the port (uvicorn's supervisor)")
    p.add_argument("--head-timeout-ms", type=float, default=5000.0,
                   help="a request's line and headers must arrive within this")
    p.add_argument("--body-timeout-ms", type=float, default=5000.0,
                   help="a request's body must arrive within this (408 otherwise)")
    p.add_argument("--keep-alive-ms", type=float, default=5000.0,
                   help="idle keep-alive connections are closed after this")
    p.add_argument("--max-connections", type=int, default=1024,
                   help="open connections + requests per process (503 beyond)")
    p.add_argument("--drain-ms", type=float, default=1000.0,
                   help="on SIGTERM, /readyz is 503 this long before the server stops "
                        "accepting")
    p.add_argument("--graceful-timeout-ms", type=float, default=10000.0,
                   help="then in-flight requests get this long to finish")
    p.add_argument("--reuse-port", action="store_true",
                   help="SO_REUSEPORT: a new sidecar may listen on the port before the old "
                        "one drains (restarts on one host without refused connections)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_serve_sidecar)
    return p


def _index_items(args) -> int:
    import elastic_transport
    import elasticsearch

    from serving.sidecar.elasticsearch_backend import index_catalog
    from serving.sidecar.filters import catalog_documents
    try:
        report = index_catalog(_es_client(args), catalog_documents(args.data_dir),
                               alias=args.es_alias, chunk_size=args.chunk_size,
                               keep_previous=args.keep_previous, replicas=args.replicas)
    except (elasticsearch.ApiError, elastic_transport.TransportError) as e:
        print(f"stars: error: Elasticsearch at {args.es_hosts}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 2
    _print(report)
    return 0


def add_index_items_parser(index_subparsers):
    p = index_subparsers.add_parser(
        "items", help="index the catalogue into Elasticsearch (new index + alias swap)")
    p.add_argument("--data-dir", required=True, help="data directory with the catalogue")
    _add_es_options(p, hosts_required=True)
    p.add_argument("--chunk-size", type=int, default=2000, help="documents per _bulk request")
    p.add_argument("--keep-previous", type=int, default=1,
                   help="older index generations kept for rollback")
    p.add_argument("--replicas", type=int, default=None,
                   help="number_of_replicas (default: the cluster's)")
    p.set_defaults(func=_index_items)
    return p


__all__ = ["add_serve_sidecar_parser", "add_index_items_parser", "build_app",
           "http_config", "with_socket_timeouts"]
