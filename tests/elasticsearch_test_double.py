"""ElasticsearchTestDouble: an HTTP-level stand-in for Elasticsearch, for tests only.

THIS IS A TEST DOUBLE, NOT ELASTICSEARCH.  No Elasticsearch is reachable from the
machines these tests run on, so the sidecar's Elasticsearch backend (through the
official ``elasticsearch`` Python client, unmodified) talks to this server on
127.0.0.1 (random port, own thread).  It answers the REST endpoints the client uses
the way Elasticsearch 8 does -- status codes, JSON shapes, the
``X-Elastic-Product: Elasticsearch`` header the client insists on, the compatible
``application/vnd.elasticsearch+json`` media types:

* ``GET|HEAD /`` (cluster info), ``PUT /{index}`` (create, with mappings/settings),
  ``HEAD|GET|DELETE /{index or pattern}``, ``PUT /{index}/_settings``,
  ``POST /{index}/_refresh``, ``GET|POST /{index}/_count``;
* ``GET|HEAD /_alias/{name}``, ``POST /_aliases`` (atomic add/remove);
* ``POST|PUT /_bulk`` and ``/{index}/_bulk`` (index/create/delete actions, NDJSON),
  rejecting fields a ``"dynamic": "strict"`` mapping does not declare;
* ``GET|POST /{index or alias}/_search`` evaluating ``bool.filter`` / ``bool.must_not``
  lists of ``ids``, ``terms``, ``term``, ``range`` (and ``match_all``) over the stored
  documents, ``size`` and ``_source``.  Hits come back in index (insertion) order
  with ``_score`` 0.0, as a filter-only query does.  Any other query clause is
  answered with a 400 ``parsing_exception``, so a test cannot pass by accident.

Numbers: ``float`` fields are stored and compared in float32, as Elasticsearch does.
Test controls: ``failures`` (HTTP statuses to answer first), ``delay_s`` (stall every
answer), ``requests`` (method, path, parsed body) and ``stop()``.
"""
from __future__ import annotations

import fnmatch
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def _f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", float(value)))[0]


class QueryError(ValueError):
    pass


class ElasticsearchTestDouble:
    """TestDouble of an Elasticsearch 8 node (a single-node in-memory index store)."""

    VERSION = "8.19.3"

    def __init__(self):
        self.indices: dict = {}   # name -> {"mappings", "settings", "docs": {id: source}}
        self.aliases: dict = {}   # alias -> set of index names
        self.failures: list = []
        self.delay_s = 0.0
        self.requests: list = []  # (method, path, body)
        self._lock = threading.Lock()
        self._connections: set = set()
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1  # one write per answer (no Nagle/delayed-ACK stalls)

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                double._connections.add(self.connection)

            def finish(self):
                double._connections.discard(self.connection)
                super().finish()

            def _send(self, status, body=None, head=False):
                accept = self.headers.get("Accept", "")
                ctype = ("application/vnd.elasticsearch+json;compatible-with=8"
                         if "vnd.elasticsearch" in accept else "application/json")
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", "0" if head else str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _handle(self, method):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if double.delay_s:
                    time.sleep(double.delay_s)
                try:
                    body = double._parse_body(raw, self.headers.get("Content-Type", ""))
                except ValueError as e:
                    return self._send(400, _error(400, "parse_exception", str(e)))
                with double._lock:
                    double.requests.append((method, parts.path, body))
                    if double.failures:
                        status = double.failures.pop(0)
                        return self._send(status, _error(status, "injected_failure",
                                                         f"injected {status}"),
                                          head=method == "HEAD")
                    status, answer = double._route(method, parts.path,
                                                   parse_qs(parts.query), body)
                self._send(status, answer, head=method == "HEAD")

            def do_GET(self):
                self._handle("GET")

            def do_HEAD(self):
                self._handle("HEAD")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_DELETE(self):
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops listening and drops open keep-alive connections (as a dead node would)."""
        self._server.shutdown()
        self._server.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ parsing
    @staticmethod
    def _parse_body(raw: bytes, content_type: str):
        if not raw:
            return None
        text = raw.decode("utf-8")
        if "ndjson" in content_type:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)

    def search_bodies(self) -> list:
        """The bodies of every ``_search`` request received, in order."""
        return [b for m, p, b in self.requests if p.endswith("/_search")]

    # ------------------------------------------------------------------ routing
    def _resolve(self, expression: str) -> list:
        names = []
        for part in expression.split(","):
            if part in ("_all", "*"):
                names.extend(self.indices)
            elif "*" in part:
                names.extend(n for n in self.indices if fnmatch.fnmatchcase(n, part))
            elif part in self.aliases:
                names.extend(sorted(self.aliases[part]))
            elif part in self.indices:
                names.append(part)
            else:
                raise KeyError(part)
        return list(dict.fromkeys(names))

    def _route(self, method, path, query, body):
        segments = [s for s in path.split("/") if s]
        try:
            if not segments:
                return 200, {"name": "test-double", "cluster_name": "test-double",
                             "cluster_uuid": "test-double", "tagline": "You Know, for Search",
                             "version": {"number": self.VERSION, "build_flavor": "default",
                                         "lucene_version": "9.12.0"}}
            if segments[0] == "_aliases" and method == "POST":
                return self._update_aliases(body)
            if segments[0] == "_alias" and len(segments) == 2:
                return self._get_alias(segments[1])
            if segments[0] == "_bulk":
                return self._bulk(None, body, query)
            if len(segments) == 1:
                return self._index_op(method, segments[0], body, query)
            name, op = segments[0], segments[1]
            if op == "_bulk":
                return self._bulk(name, body, query)
            if op == "_search":
                return self._search(name, body or {})
            if op == "_count":
                return 200, {"count": sum(len(self.indices[n]["docs"])
                                          for n in self._resolve(name)),
                             "_shards": _shards()}
            if op == "_refresh":
                self._resolve(name)
                return 200, {"_shards": _shards()}
            if op == "_settings" and method == "PUT":
                for n in self._resolve(name):
                    _merge_settings(self.indices[n]["settings"], body or {})
                return 200, {"acknowledged": True}
        except KeyError as e:
            missing = e.args[0]
            return 404, _error(404, "index_not_found_exception",
                               f"no such index [{missing}]", index=missing)
        except QueryError as e:
            return 400, _error(400, "parsing_exception", str(e))
        return 400, _error(400, "illegal_argument_exception",
                           f"test double: unsupported {method} {path}")

    def _index_op(self, method, name, body, query):
        if method == "PUT":
            if name in self.indices or name in self.aliases:
                return 400, _error(400, "resource_already_exists_exception",
                                   f"index [{name}] already exists", index=name)
            body = body or {}
            settings = {}
            _merge_settings(settings, body.get("settings") or {})
            self.indices[name] = {"mappings": body.get("mappings") or {}, "settings": settings,
                                  "docs": {}}
            for alias in (body.get("aliases") or {}):
                self.aliases.setdefault(alias, set()).add(name)
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
        if method == "DELETE":
            try:
                names = self._resolve(name)
            except KeyError:
                if query.get("ignore_unavailable") == ["true"]:
                    return 200, {"acknowledged": True}
                raise
            for n in names:
                del self.indices[n]
                for members in self.aliases.values():
                    members.discard(n)
            self.aliases = {a: m for a, m in self.aliases.items() if m}
            return 200, {"acknowledged": True}
        if method in ("GET", "HEAD"):
            names = self._resolve(name)
            return 200, {n: {"aliases": {a: {} for a, m in self.aliases.items() if n in m},
                             "mappings": self.indices[n]["mappings"],
                             "settings": {"index": self.indices[n]["settings"]}}
                         for n in names}
        return 405, _error(405, "method_not_allowed", f"{method} /{name}")

    def _get_alias(self, alias):
        if alias not in self.aliases:
            return 404, {"error": f"alias [{alias}] missing", "status": 404}
        return 200, {n: {"aliases": {alias: {}}} for n in sorted(self.aliases[alias])}

    def _update_aliases(self, body):
        aliases = {a: set(m) for a, m in self.aliases.items()}
        for action in body["actions"]:
            (kind, spec), = action.items()
            index, alias = spec["index"], spec["alias"]
            if index not in self.indices:
                raise KeyError(index)
            if kind == "add":
                if alias in self.indices:
                    return 400, _error(400, "invalid_alias_name_exception",
                                       f"an index exists with the same name as the alias "
                                       f"[{alias}]")
                aliases.setdefault(alias, set()).add(index)
            elif kind == "remove":
                if index not in aliases.get(alias, set()):
                    return 404, _error(404, "aliases_not_found_exception",
                                       f"aliases [{alias}] missing")
                aliases[alias].discard(index)
            else:
                return 400, _error(400, "illegal_argument_exception", f"action {kind}")
        self.aliases = {a: m for a, m in aliases.items() if m}  # all or nothing
        return 200, {"acknowledged": True}

    # ------------------------------------------------------------------ documents
    def _bulk(self, default_index, lines, query):
        items, errors = [], False
        lines = list(lines or [])
        i = 0
        while i < len(lines):
            (op, meta), = lines[i].items()
            index = meta.get("_index", default_index)
            doc_id = str(meta["_id"])
            source = lines[i + 1] if op in ("index", "create") else None
            i += 2 if source is not None else 1
            names = self._resolve(index) if index in self.aliases else [index]
            if names[0] not in self.indices:
                raise KeyError(index)
            store = self.indices[names[0]]
            result = {"_index": names[0], "_id": doc_id}
            problem = self._check_strict(store["mappings"], source) if source else None
            if problem:
                result.update(status=400, error={"type": "strict_dynamic_mapping_exception",
                                                 "reason": problem})
                errors = True
            elif op == "create" and doc_id in store["docs"]:
                result.update(status=409, error={"type": "version_conflict_engine_exception",
                                                 "reason": "document already exists"})
                errors = True
            elif op == "delete":
                found = store["docs"].pop(doc_id, None) is not None
                result.update(status=200 if found else 404,
                              result="deleted" if found else "not_found")
            else:
                created = doc_id not in store["docs"]
                store["docs"][doc_id] = self._stored(store["mappings"], source)
                result.update(status=201 if created else 200,
                              result="created" if created else "updated")
            items.append({op: result})
        return 200, {"took": 1, "errors": errors, "items": items}

    @staticmethod
    def _check_strict(mappings, source):
        if mappings.get("dynamic") != "strict":
            return None
        declared = mappings.get("properties", {})
        for field in source:
            if field not in declared:
                return f"mapping set to strict, dynamic introduction of [{field}] is not allowed"
        return None

    @staticmethod
    def _stored(mappings, source):
        doc = dict(source)
        for field, spec in mappings.get("properties", {}).items():
            if field in doc and spec.get("type") == "float" and doc[field] is not None:
                doc[field] = _f32(doc[field])
        return doc

    # ------------------------------------------------------------------ search
    def _search(self, expression, body):
        for key in body:
            if key not in ("query", "size", "_source", "from", "track_total_hits"):
                raise QueryError(f"test double: unsupported search key [{key}]")
        names = self._resolve(expression)
        query = body.get("query", {"match_all": {}})
        hits = []
        for n in names:
            mappings = self.indices[n]["mappings"].get("properties", {})
            for doc_id, source in self.indices[n]["docs"].items():
                if _matches(query, doc_id, source, mappings):
                    hit = {"_index": n, "_id": doc_id, "_score": 0.0}
                    if body.get("_source", True) is not False:
                        hit["_source"] = source
                    hits.append(hit)
        size = int(body.get("size", 10))
        return 200, {"took": 1, "timed_out": False, "_shards": _shards(),
                     "hits": {"total": {"value": len(hits), "relation": "eq"},
                              "max_score": 0.0 if hits else None, "hits": hits[:size]}}


def _matches(clause, doc_id, source, mappings) -> bool:
    if not isinstance(clause, dict) or len(clause) != 1:
        raise QueryError(f"test double: a query clause must have one key, got {clause!r}")
    (kind, spec), = clause.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        for key in spec:
            if key not in ("filter", "must_not"):
                raise QueryError(f"test double: bool.{key} is not supported (filter context "
                                 "only)")
        filters = spec.get("filter", [])
        filters = filters if isinstance(filters, list) else [filters]
        must_not = spec.get("must_not", [])
        must_not = must_not if isinstance(must_not, list) else [must_not]
        return (all(_matches(c, doc_id, source, mappings) for c in filters)
                and not any(_matches(c, doc_id, source, mappings) for c in must_not))
    if kind == "ids":
        return doc_id in set(map(str, spec["values"]))
    if kind in ("terms", "term"):
        (field, wanted), = spec.items()
        if kind == "term":
            wanted = [wanted["value"] if isinstance(wanted, dict) else wanted]
        values = _values(source, field)
        kind_of = mappings.get(field, {}).get("type")
        wanted = {_coerce(w, kind_of) for w in wanted}
        return any(_coerce(v, kind_of) in wanted for v in values)
    if kind == "range":
        (field, bounds), = spec.items()
        values = _values(source, field)
        floaty = mappings.get(field, {}).get("type") == "float"
        conv = _f32 if floaty else float
        for v in values:
            v = float(v)
            ok = True
            for op, bound in bounds.items():
                b = conv(bound)
                ok &= {"gte": v >= b, "gt": v > b, "lte": v <= b, "lt": v < b}[op]
            if ok:
                return True
        return False
    raise QueryError(f"test double: unknown query [{kind}]")


def _values(source, field):
    value = source.get(field)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _coerce(value, kind):
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind in ("float", "integer", "long"):
        return float(value)
    return str(value)


def _merge_settings(target: dict, settings: dict) -> None:
    settings = settings.get("index", settings)
    for key, value in settings.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def _shards():
    return {"total": 1, "successful": 1, "skipped": 0, "failed": 0}


def _error(status, kind, reason, **extra):
    cause = {"type": kind, "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}
