"""Reliability benchmark (``make bench-reliability``): the real serving stack under load
and faults, every answer checked against the catalogue.

    python -m benchmarks.reliability [--demo-dir out/demo] [--requests 2000] \
        [--out benchmarks/results/reliability.json]

The stack, each part its own process on loopback, as a deployment runs it:

* ``stars serve model`` on the demo's pushed model (``make demo`` builds it; run here
  with ``stars demo --no-serving`` when ``--demo-dir`` has none);
* ``redis-server`` holding the user embeddings (``stars batch user-embeddings``);
* ``noida-db``, an independent Elasticsearch-API server (not Elasticsearch; see
  BUILD_NOTES), holding the catalogue (``stars index items``);
* ``stars serve sidecar`` with its production settings (the defaults, plus the
  Elasticsearch backend and the Redis store).

Then, with the load generator (``benchmarks.load``) in this process on the same cores:

1. **load**: closed loop at concurrency 1, 8, 32, 64 (``--requests`` each);
2. **capacity**: open loop at increasing arrival rates (``--rate-step``), each for
   ``--step-s``; the capacity is the highest rate whose p99 < 50 ms with < 1 % degraded
   answers, no error and the rate achieved;
3. **faults** under a steady open-loop load (``--fault-rate``): the model server stopped
   (SIGSTOP) and resumed, killed and restarted; the filter backend killed and restarted;
   Redis hung (SIGSTOP) and resumed; the sidecar restarted (a new one on the port with
   SO_REUSEPORT, then SIGTERM to the old one); a model push (a new version copied in and
   renamed).  Each row counts the whole window and gives the recovery time after the
   fault ends (:func:`benchmarks.load.recovery_s`);
4. **floor**: the served SavedModel's ``search`` called in-process (ScaNN, one thread),
   in a child process, on the same machine.

Writes the JSON to ``--out`` and a Markdown table beside it (``.md``).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, List

import numpy as np

from benchmarks.load import AnswerCheck, closed_loop, open_loop, recovery_s, summarize, timeline
from benchmarks.report import command_line, write_results
from benchmarks.serving import _percentiles, _sessions
from stars.environment import configure
from tests.fixtures import free_port

MODEL_NAME = "stars"
K = 10
TARGETS = {"capacity_rps": 600, "p99_ms": 50.0, "degraded_share": 0.01, "recovery_s": 2.0,
           "deadline_slack_ms": 50.0}
STARS = os.path.join(os.path.dirname(sys.executable), "stars")
# The model server's production settings here (BUILD_NOTES): one TensorFlow thread per op
# (~40 % less CPU per call than the default pools) and deploy/'s batching (no wait: calls
# that queue while TensorFlow is busy run as one batch).
BATCHING_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "deploy", "config", "batching_parameters.pbtxt")
MODEL_SERVER_ARGS = ["--tensorflow-intra-op-parallelism", "1",
                     "--tensorflow-inter-op-parallelism", "1",
                     "--enable-batching", "--batching-parameters-file", BATCHING_FILE]


def _get_json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _wait(check, what: str, timeout_s: float = 180.0, process=None) -> float:
    """Polls ``check()`` until true; seconds waited."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # not up yet
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(0.05)


class Stack:
    """The processes of the serving stack, started and stopped together."""

    def __init__(self, data_dir: str, model_base: str, work: Path, sidecar_args: List[str],
                 model_args: List[str] = ()):
        self.data_dir, self.model_base, self.work = data_dir, model_base, work
        self.sidecar_args, self.model_args = sidecar_args, list(model_args)
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.grpc_port, self.rest_port, self.port = free_port(), free_port(), free_port()
        self.model = self.sidecar = None
        self.redis = self.es = None
        self.filter_backend = "elasticsearch"

    def _spawn(self, name: str, argv: List[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    # -- model server
    def model_versions(self) -> List[int]:
        status = _get_json(f"http://127.0.0.1:{self.rest_port}/v1/models/{MODEL_NAME}")
        return sorted(int(s["version"]) for s in status["model_version_status"]
                      if s["state"] == "AVAILABLE")

    def start_model(self) -> float:
        self.model = self._spawn("model_server", [
            STARS, "serve", "model", "--no-native", "--model-base-path", self.model_base,
            "--model-name", MODEL_NAME, "--port", str(self.grpc_port),
            "--rest-api-port", str(self.rest_port), "--host", "127.0.0.1",
            # a push keeps the previous version loaded: the stored embeddings (pinned to the
            # version that made them) stay usable until the batch job has refreshed them
            "--num-latest", "2", *self.model_args])
        return _wait(lambda: self.model_versions(), "model server", process=self.model)

    # -- sidecar
    def sidecar_command(self) -> List[str]:
        backend = (["--filter-backend", "elasticsearch", "--es-hosts", self.es.url]
                   if self.filter_backend == "elasticsearch" else [])
        return [STARS, "serve", "sidecar", "--data-dir", self.data_dir, "--host", "127.0.0.1",
                "--port", str(self.port), "--model-url", f"grpc://127.0.0.1:{self.grpc_port}",
                "--user-store", self.redis.url, *backend, "--reuse-port", *self.sidecar_args]

    def start_sidecar(self) -> subprocess.Popen:
        """A sidecar on the port, once it answers ready itself (another one may share the
        port: the answers name their process)."""
        process = self._spawn("sidecar", self.sidecar_command())

        def ready():
            answer = _get_json(f"{self.url}/readyz")
            return answer["pid"] == process.pid and answer["status"] == "ready"
        _wait(ready, "sidecar", process=process)
        return process

    def switch_sidecar(self, filter_backend: str) -> None:
        """A new sidecar with another filter backend on the port, then the old one drains."""
        self.filter_backend = filter_backend
        old, self.sidecar = self.sidecar, self.start_sidecar()
        old.send_signal(signal.SIGTERM)
        old.wait(60)

    def cpu_seconds(self) -> Dict[str, float]:
        """CPU time (user + system) of each process so far."""
        pids = {"sidecar": self.sidecar.pid, "model_server": self.model.pid,
                "filter_backend": self.es.process.pid, "redis": self.redis.process.pid,
                "load_generator": os.getpid()}
        out = {}
        for name, pid in pids.items():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                out[name] = float("nan")
        return out

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Dict[str, float]:
        from tests.independent_elasticsearch import IndependentElasticsearch
        from tests.redis_server import RedisServer
        times = {}
        started = time.monotonic()
        self.redis = RedisServer(self.work / "redis")
        self.es = IndependentElasticsearch()
        times["redis_and_es_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        subprocess.run([STARS, "index", "items", "--data-dir", self.data_dir, "--es-hosts",
                        self.es.url], check=True, stdout=subprocess.DEVNULL)
        times["index_items_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        subprocess.run([STARS, "batch", "user-embeddings", "--model-base-path", self.model_base,
                        "--data-dir", self.data_dir, "--store", self.redis.url], check=True,
                       stdout=subprocess.DEVNULL, stderr=open(self.logs / "batch.log", "ab"))
        times["batch_user_embeddings_s"] = round(time.monotonic() - started, 1)
        times["model_server_start_s"] = round(self.start_model(), 1)
        started = time.monotonic()
        self.sidecar = self.start_sidecar()
        times["sidecar_start_s"] = round(time.monotonic() - started, 1)
        return times

    def stop(self) -> None:
        for process in (self.sidecar, self.model):
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        for service in (self.es, self.redis):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()


# ------------------------------------------------------------------------------ requests
def request_bodies(data_dir: str, catalog, users: int, seed: int) -> List[dict]:
    """Known users (stored embeddings) and anonymous sessions, with business filters:
    region and stock always, a price ceiling or a category on some."""
    rng = np.random.default_rng(seed)
    sessions, last = _sessions(data_dir, 2 * users)
    regions = sorted(catalog.regions()) or ["us"]
    categories = sorted({c for doc in catalog.ids[:2000] for c in catalog._records[doc]
                         .categories if " > " not in c})
    bodies = []
    for n, (user, events) in enumerate(sessions):
        filters = {"region": str(rng.choice(regions)), "in_stock": True}
        if rng.random() < 0.3:
            filters["price"] = {"max": float(rng.choice([20.0, 40.0, 80.0]))}
        if categories and rng.random() < 0.2:
            filters["categories"] = [str(rng.choice(categories))]
        context = {"timestamp": last + 3600}
        if n < users:  # a known user: the stored path
            bodies.append({"user_id": user, "k": K, "mode": "rr", "filters": filters,
                           "context": context})
        else:  # an anonymous session: encoded by the model, its own items excluded
            filters["exclude_ids"] = sorted({i for i, _, _ in events})
            bodies.append({"events": [{"item_id": i, "event_type": e, "timestamp": t}
                                      for i, e, t in events],
                           "k": K, "mode": "rr", "filters": filters, "context": context})
    order = rng.permutation(len(bodies))
    return [bodies[i] for i in order]


# ------------------------------------------------------------------------------ phases
def _run(coroutine):
    return asyncio.run(coroutine)


def load_rows(stack: Stack, bodies, check, requests: int) -> List[dict]:
    rows = []
    url = f"{stack.url}/v1/recommendations"
    for concurrency in (1, 8, 32, 64):
        _run(closed_loop(url, bodies, check, concurrency, min(200, requests)))  # warm-up
        started, cpu = time.monotonic(), stack.cpu_seconds()
        outcomes = _run(closed_loop(url, bodies, check, concurrency, requests))
        row = {"concurrency": concurrency,
               **summarize(outcomes, wall_s=time.monotonic() - started),
               "cpu_ms_per_request": _cpu_per_request(cpu, stack.cpu_seconds(), requests)}
        print(f"   load c={concurrency}: {row}", flush=True)
        rows.append(row)
    return rows


def _cpu_per_request(before: Dict[str, float], after: Dict[str, float], requests: int):
    return {name: round((after[name] - before[name]) * 1000.0 / requests, 2) for name in after}


def capacity(stack: Stack, bodies, check, rates: List[float], step_s: float) -> dict:
    url = f"{stack.url}/v1/recommendations"
    steps, best, failures = [], None, 0
    for rate in rates:
        cpu = stack.cpu_seconds()
        row = {"rate": rate, **summarize(_run(open_loop(url, bodies, check, rate, step_s)),
                                         wall_s=step_s)}
        row["cpu_ms_per_request"] = _cpu_per_request(cpu, stack.cpu_seconds(), row["requests"])
        ok = (row["p99_ms"] is not None and row["p99_ms"] < TARGETS["p99_ms"]
              and (row["degraded_share"] or 0.0) < TARGETS["degraded_share"]
              and row["http_5xx"] == row["connection_errors"] == row["filter_violations"] == 0
              and row["requests"] - row["http_429"] >= 0.98 * rate * step_s)
        row["passes"] = ok
        print(f"   capacity {rate:.0f}/s: {row}", flush=True)
        steps.append(row)
        if ok:
            best, failures = rate, 0
        else:
            failures += 1
            if failures >= 2:
                break
    return {"capacity_rps": best, "steps": steps}


def _fault_window(stack: Stack, bodies, check, rate: float, before_s: float, apply,
                  after_s: float) -> dict:
    """Steady open-loop load; ``apply()`` (blocking, in a thread) starts ``before_s`` into
    it and returns when the fault has ended; the load goes on ``after_s`` longer."""
    url = f"{stack.url}/v1/recommendations"
    outcomes, marks = [], {}

    async def run():
        stop = asyncio.Event()

        async def inject():
            await asyncio.sleep(before_s)
            marks["start"] = time.monotonic()
            marks.update(await asyncio.get_running_loop().run_in_executor(None, apply) or {})
            marks["end"] = time.monotonic()
            await asyncio.sleep(after_s)
            stop.set()
        await asyncio.gather(inject(), open_loop(url, bodies, check, rate, stop=stop,
                                                 outcomes=outcomes))
    _run(run())
    row = summarize(outcomes)
    row["fault_s"] = round(marks["end"] - marks["start"], 2)
    row["recovery_s"] = recovery_s(outcomes, marks["end"])
    first = min(o.sent for o in outcomes)
    row["fault_start_s"] = round(marks["start"] - first, 2)
    row["fault_end_s"] = round(marks["end"] - first, 2)
    row["timeline"] = timeline(outcomes, first)
    row.update({k: v for k, v in marks.items() if k not in ("start", "end")})
    return row


def faults(stack: Stack, bodies, check, rate: float, hold_s: float) -> List[dict]:
    rows = []

    def pause(process):
        def apply():
            process.send_signal(signal.SIGSTOP)
            time.sleep(hold_s)
            process.send_signal(signal.SIGCONT)
        return apply

    def restart_model():
        stack.model.kill()
        stack.model.wait()
        time.sleep(1.0)
        return {"restart_s": round(stack.start_model(), 1)}

    def restart_es():
        stack.es.kill()
        time.sleep(hold_s)
        stack.es.restart()

    def restart_sidecar():
        old = stack.sidecar
        started = time.monotonic()
        stack.sidecar = stack.start_sidecar()  # shares the port (SO_REUSEPORT)
        old.send_signal(signal.SIGTERM)
        old.wait(60)
        return {"restart_s": round(time.monotonic() - started, 1)}

    def push():
        versions = sorted(int(v) for v in os.listdir(stack.model_base) if v.isdigit())
        new = versions[-1] + 1
        staging = Path(stack.model_base) / f".staging-{new}"
        shutil.copytree(Path(stack.model_base) / str(versions[-1]), staging)
        os.rename(staging, Path(stack.model_base) / str(new))  # atomic: never half-written
        waited = _wait(lambda: new in stack.model_versions(), "model push", timeout_s=120)
        return {"pushed_version": new, "load_s": round(waited, 1)}

    scenarios = [
        ("model server stopped (SIGSTOP) and resumed", lambda: pause(stack.model)()),
        ("model server killed and restarted", restart_model),
        ("filter backend killed and restarted", restart_es),
        ("Redis hung (SIGSTOP) and resumed", lambda: pause(stack.redis.process)()),
        ("sidecar restarted (new one on the port, then SIGTERM)", restart_sidecar),
        ("model push (new version renamed in)", push),
    ]
    for name, apply in scenarios:
        row = {"fault": name, **_fault_window(stack, bodies, check, rate, 3.0, apply, 5.0)}
        print(f"   fault {name}: {row}", flush=True)
        rows.append(row)
    return rows


def _floor_child(model_dir: str, queries_file: str, out_file: str, calls: int) -> None:
    from stars.environment import configure
    configure()
    import tensorflow as tf

    from stars.saved_model import load_serving_model  # registers the ScaNN ops
    search = load_serving_model(model_dir).signatures["search"]
    queries = np.load(queries_file)
    for q in queries[:20]:  # warm-up
        search(query_embeddings=tf.constant(q[None]))
    times = []
    for n in range(calls):
        started = time.perf_counter()
        search(query_embeddings=tf.constant(queries[n % len(queries)][None]))
        times.append((time.perf_counter() - started) * 1000.0)
    Path(out_file).write_text(json.dumps(times))


def floor(stack: Stack, bodies, calls: int, work: Path) -> dict:
    """The served index's ``search`` in-process (no network, no sidecar), one thread, on
    the stored embeddings of the benchmark's known users."""
    import multiprocessing

    from serving.batch.job import resolve_model_dir
    from serving.batch.redis_store import RedisStore
    store = RedisStore.from_url(stack.redis.url)
    users = [b["user_id"] for b in bodies if "user_id" in b][:200]
    rows = [e for e in store.get_many(users) if e is not None]
    queries = np.stack([np.asarray(e[1], np.float32) for e in rows])
    qfile, out = work / "floor_queries.npy", work / "floor_times.json"
    np.save(qfile, queries)
    child = multiprocessing.get_context("spawn").Process(
        target=_floor_child, args=(resolve_model_dir(stack.model_base), str(qfile), str(out),
                                   calls))
    child.start()
    child.join()
    times = json.loads(out.read_text())
    stats = _percentiles(times)
    return {"scann_in_process_rps": stats["throughput_rps"],
            "scann_in_process_p99_ms": stats["p99_ms"],
            "scann_in_process_p50_ms": stats["p50_ms"], "calls": calls}


# ------------------------------------------------------------------------------ report
def markdown(document: dict) -> str:
    cols = ["requests", "http_5xx", "http_429", "connection_errors", "filter_violations",
            "degraded_share", "short_answers", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
    lines = [f"# Reliability benchmark ({document['date']})", "",
             f"Command: `{document['command']}`", "",
             "Every part of the stack is its own process on one 2-core machine, the load "
             "generator beside it (see `benchmarks/reliability.py`).", "",
             "## Load (closed loop)", "",
             "| concurrency | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for row in document["load"]:
        lines.append(f"| {row['concurrency']} | " + " | ".join(str(row[c]) for c in cols) + " |")
    cap = document["capacity"]
    fl = document["floor"]
    lines += ["", "## Capacity (open loop)", "",
              f"Capacity (p99 < {TARGETS['p99_ms']:.0f} ms, < 1 % degraded, no errors): "
              f"**{document['capacity_rps']} requests/s** (target {TARGETS['capacity_rps']}); "
              f"in-process ScaNN floor: {fl['scann_in_process_rps']} calls/s, p99 "
              f"{fl['scann_in_process_p99_ms']} ms (one thread, no network).", "",
              "| rate | passes | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for row in cap["steps"]:
        lines.append(f"| {row['rate']:.0f} | {'yes' if row['passes'] else 'no'} | "
                     + " | ".join(str(row[c]) for c in cols) + " |")
    lines += ["", f"## Faults (open loop at {document['settings']['fault_rate']:.0f} "
              "requests/s; the window includes 3 s before and 5 s after the fault)", "",
              "| fault | fault_s | recovery_s | " + " | ".join(cols) + " |",
              "|---|---|---|" + "---|" * len(cols)]
    for row in document["faults"]:
        lines.append(f"| {row['fault']} | {row['fault_s']} | {row['recovery_s']} | "
                     + " | ".join(str(row[c]) for c in cols) + " |")
    lines += ["", "## Targets", ""]
    for name, result in document["targets"].items():
        lines.append(f"- {name}: {result}")
    return "\n".join(lines) + "\n"


def targets(document: dict, budget_ms: float) -> dict:
    rows = document["load"] + document["faults"]
    violations = sum(r["filter_violations"] for r in rows + document["capacity"]["steps"])
    fivexx = sum(r["http_5xx"] for r in rows + document["capacity"]["steps"])
    overload = next(r for r in document["load"] if r["concurrency"] == 64)
    slowest = max(r["max_ms"] or 0 for r in document["load"])
    recovery = max(r["recovery_s"] for r in document["faults"])
    cap = document["capacity_rps"] or 0
    return {
        "0 answers breaking a filter": f"{'reached' if violations == 0 else 'missed'} "
                                       f"({violations})",
        "0 5xx": f"{'reached' if fivexx == 0 else 'missed'} ({fivexx})",
        f"capacity >= {TARGETS['capacity_rps']} rps":
            f"{'reached' if cap >= TARGETS['capacity_rps'] else 'missed'} ({cap})",
        "overload (c=64): 0 5xx, 0 violations": "reached" if overload["http_5xx"] == 0 and
        overload["filter_violations"] == 0 else "missed",
        f"no closed-loop request longer than the budget + {TARGETS['deadline_slack_ms']:.0f} ms":
            f"{'reached' if slowest <= budget_ms + TARGETS['deadline_slack_ms'] else 'missed'} "
            f"(slowest {slowest} ms, budget {budget_ms:.0f} ms)",
        f"recovery within {TARGETS['recovery_s']:.0f} s of every fault":
            f"{'reached' if recovery <= TARGETS['recovery_s'] else 'missed'} (worst {recovery} s)",
    }


# ------------------------------------------------------------------------------ main
def _ensure_demo(demo_dir: Path) -> tuple:
    data_dir = demo_dir / "data"
    model_base = demo_dir / "pipeline" / "serving" / MODEL_NAME
    if not (model_base.is_dir() and any(v.isdigit() for v in os.listdir(model_base))):
        print(f"== no pushed model under {model_base}: stars demo --no-serving", flush=True)
        subprocess.run([STARS, "demo", "--out", str(demo_dir), "--no-serving"], check=True)
    return str(data_dir.resolve()), str(model_base.resolve())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reliability",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--demo-dir", default="out/demo")
    p.add_argument("--work", default="out/bench-reliability")
    p.add_argument("--out", default="benchmarks/results/reliability.json")
    p.add_argument("--requests", type=int, default=2000, help="per closed-loop row")
    p.add_argument("--users", type=int, default=400, help="known users (and as many sessions)")
    p.add_argument("--rates", default="100,200,300,400,500,600,700,800",
                   help="open-loop arrival rates of the capacity search")
    p.add_argument("--step-s", type=float, default=8.0)
    p.add_argument("--fault-rate", type=float, default=100.0)
    p.add_argument("--fault-hold-s", type=float, default=4.0)
    p.add_argument("--floor-calls", type=int, default=2000)
    p.add_argument("--sidecar-arg", action="append", default=[],
                   help="extra `stars serve sidecar` arguments (repeat)")
    p.add_argument("--model-arg", action="append", default=None,
                   help="`stars serve model` arguments (repeat; default: one TensorFlow "
                        "thread per op, " + " ".join(MODEL_SERVER_ARGS) + ")")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    configure()  # the entry point sets the process up (stars.environment)
    args = build_parser().parse_args(argv)
    args.model_arg = MODEL_SERVER_ARGS if args.model_arg is None else args.model_arg
    from serving.sidecar.filters import EmbeddedFilterBackend
    demo_dir = Path(args.demo_dir)
    data_dir, demo_base = _ensure_demo(demo_dir)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model_base = work / "models" / MODEL_NAME  # a copy: the push fault adds versions
    shutil.copytree(demo_base, model_base)
    catalog = EmbeddedFilterBackend.from_catalog(data_dir)
    check = AnswerCheck(catalog)
    bodies = request_bodies(data_dir, catalog, args.users, args.seed)
    stack = Stack(data_dir, str(model_base.resolve()), work, args.sidecar_arg, args.model_arg)
    document = {"date": datetime.date.today().isoformat(),
                "command": command_line("bench-reliability", "BENCH_RELIABILITY_ARGS",
                                        argv if argv is not None else sys.argv[1:]),
                "machine": {"cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}}
    try:
        print("== starting the stack", flush=True)
        document["startup"] = stack.start()
        document["settings"] = {"sidecar": stack.sidecar_command()[3:],
                                "model_server": ["--num-latest", "2", *args.model_arg], "k": K,
                                "requests_per_load_row": args.requests,
                                "fault_rate": args.fault_rate, "fault_hold_s": args.fault_hold_s,
                                "capacity_step_s": args.step_s, "bodies": len(bodies),
                                "catalogue_items": len(catalog)}
        print("== load", flush=True)
        document["load"] = load_rows(stack, bodies, check, args.requests)
        # The capacity target is defined on the embedded filter backend (the catalogue in
        # the sidecar's memory); the other phases run on Elasticsearch.
        print("== capacity (embedded filter backend)", flush=True)
        stack.switch_sidecar("embedded")
        document["capacity"] = capacity(stack, bodies, check,
                                        [float(r) for r in args.rates.split(",")], args.step_s)
        document["capacity"]["filter_backend"] = "embedded"
        document["capacity_rps"] = document["capacity"]["capacity_rps"]
        stack.switch_sidecar("elasticsearch")
        print("== faults", flush=True)
        document["faults"] = faults(stack, bodies, check, args.fault_rate, args.fault_hold_s)
        print("== floor", flush=True)
        document["floor"] = floor(stack, bodies, args.floor_calls, work)
    finally:
        stack.stop()
    document["machine"]["load_avg_end"] = os.getloadavg()
    document["targets"] = targets(document, budget_ms=200.0)
    print(write_results(args.out, document, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
