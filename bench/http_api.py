"""Benchmark: the HTTP API (`stride serve`) at fixed offered rates, from separate processes.

    python bench/http_api.py [--server postgresql://postgres@127.0.0.1:5432/postgres]
                         [--duration 15] [--server-workers 1] [--load-processes 1]

A scratch database gets users, one token each and their projections (events
posted through the API, then one `stride worker --once`). `stride serve` runs as
its own process; the load comes from separate processes running an open-loop
client: request i is due at start + i/rate whatever happened before, and its
latency counts from that due time (wrk2-style), so a slow server cannot slow the
load down and hide its own latency. Scenarios, in this order:

1. GET one projection at 1,000 req/s            (goal: p99 < 10 ms)
2. POST one event at 200 req/s, a worker running (goal: p99 < 25 ms)
3. read-your-write at 50 pairs/s, one idle worker: POST an event, then
   GET …?after_event=<id>; latency from the POST's due time to the GET's
   answer                                         (goal: p99 < 50 ms)
4. POST batches of 1,000 events, closed loop, no worker (goal: >= 20,000 events/s)

Server, PostgreSQL and load share this machine's cores; CPU seconds of each are
reported so the load generator can be seen not to be the bottleneck.
"""

# ruff: noqa: E402 (the standard library's `http` must not be shadowed; see below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder would come first on sys.path and its name
# (http.py) would shadow the standard library's `http` package: put the
# repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import psycopg

from bench.harness import (
    DEFAULT_SERVER,
    create_database,
    drop_database,
    percentile,
    postgres_cpu_seconds,
)
from stride.api.service import issue_token

STRIDE = str(Path(sys.executable).with_name("stride"))
WHEN = "2026-03-01T07:30:00Z"


# --- the load client (runs in its own processes) -------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; requests are pre-built bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body


def get_request(path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


def post_request(path: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class LoadPlan:
    kind: str  # get | post_one | ryw | batch
    port: int
    tokens: list[str]
    duration: float
    rate: float = 0.0  # per process; 0 = closed loop
    concurrency: int = 8
    batch_size: int = 1000
    seed: int = 0


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def _event(rng: random.Random) -> dict[str, Any]:
    return {"event_type": "set.logged", "timestamp": WHEN, "data": {"reps": rng.randint(1, 12)}}


async def _run(plan: LoadPlan) -> LoadResult:
    rng = random.Random(plan.seed)
    loop = asyncio.get_running_loop()
    result = LoadResult()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(plan.concurrency):
        idle.put_nowait(await Connection.open(plan.port))
    one_event = [json.dumps(_event(rng)).encode() for _ in range(64)]
    batches = [
        json.dumps({"events": [_event(rng) for _ in range(plan.batch_size)]}).encode()
        for _ in range(4)
    ]

    async def send(conn: Connection, i: int) -> int:
        token = plan.tokens[i % len(plan.tokens)]
        if plan.kind == "get":
            path = "/v1/projections/objective_state/active"
            status, _ = await conn.request(get_request(path, token))
            return status
        if plan.kind == "post_one":
            status, _ = await conn.request(post_request("/v1/events", token, one_event[i % 64]))
            return status
        if plan.kind == "batch":
            status, _ = await conn.request(post_request("/v1/events", token, batches[i % 4]))
            if status == 201:
                result.events += plan.batch_size
            return status
        # ryw: POST, then GET after_event with the id it answered
        status, body = await conn.request(post_request("/v1/events", token, one_event[i % 64]))
        if status != 201:
            return status
        event_id = json.loads(body)["id"]
        path = f"/v1/projections/objective_state/active?after_event={event_id}&timeout=5s"
        status, _ = await conn.request(get_request(path, token))
        return status

    async def one(i: int, due: float) -> None:
        conn = await idle.get()  # waiting for a connection counts: latency is from `due`
        try:
            status = await send(conn, i)
        finally:
            idle.put_nowait(conn)
        result.latencies.append(loop.time() - due)
        result.statuses[status] += 1

    started = loop.time() + 0.05
    deadline = started + plan.duration
    if plan.rate > 0:
        tasks = []
        count = int(plan.rate * plan.duration)
        for i in range(count):
            due = started + i / plan.rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    else:

        async def closed(worker: int) -> None:
            i = worker
            while loop.time() < deadline:
                await one(i, loop.time())
                i += plan.concurrency

        await asyncio.gather(*(closed(w) for w in range(plan.concurrency)))
    result.seconds = loop.time() - started
    return result


def load_process(plan: LoadPlan, queue: Any) -> None:
    import uvloop

    cpu = time.process_time()
    result = uvloop.run(_run(plan))
    result.cpu_seconds = time.process_time() - cpu
    queue.put(result)


def run_load(plans: list[LoadPlan]) -> LoadResult:
    """Run the plans in parallel processes; merged result."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=load_process, args=(p, queue)) for p in plans]
    for process in processes:
        process.start()
    parts = [queue.get(timeout=plans[0].duration + 120) for _ in processes]
    for process in processes:
        process.join()
    merged = LoadResult()
    for part in parts:
        merged.latencies += part.latencies
        merged.statuses.update(part.statuses)
        merged.events += part.events
        merged.seconds = max(merged.seconds, part.seconds)
        merged.cpu_seconds += part.cpu_seconds
    return merged


# --- orchestration ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_server(database_url: str, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    command = [STRIDE, "serve", "--port", str(port), "--workers", str(workers)]
    command += ["--database-url", database_url, "--rate-limit", "0", "--pool-size", "10"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 60, "stride serve")
    return process


def start_worker(database_url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [STRIDE, "worker", "--database-url", database_url, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def open_jobs(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM background_jobs WHERE status IN ('pending', 'processing')"
        ).fetchone()
    return int(row[0]) if row else 0


def prepare(database_url: str, users: int, port: int) -> list[str]:
    """Users with one token each; their events posted through the API."""
    tokens = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        user_ids = [
            row[0]
            for row in conn.execute(
                "INSERT INTO users SELECT FROM generate_series(1, %s) RETURNING id", (users,)
            ).fetchall()
        ]
        for user_id in user_ids:
            tokens.append(issue_token(conn, user_id, operator=False, expires_at=None).text)
    history = [
        {
            "event_type": "profile.updated",
            "timestamp": WHEN,
            "data": {"training_modality": "hybrid"},
        },
        {
            "event_type": "objective.set",
            "timestamp": WHEN,
            "data": {"objective_id": "o1", "mode": "coach", "primary_goal": {"type": "strength"}},
        },
        *({"event_type": "set.logged", "timestamp": WHEN, "data": {"reps": 5}} for _ in range(18)),
    ]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        for token in tokens:
            answer = http.post(
                "/v1/events", json={"events": history}, headers={"Authorization": f"Bearer {token}"}
            )
            answer.raise_for_status()
    return tokens


@dataclass
class Row:
    name: str
    offered: str
    result: LoadResult
    unit_rate: float
    unit: str
    goal: str
    server_cpu: float
    postgres_cpu: float


def _server_cpu(process: subprocess.Popen[bytes]) -> float:
    proc = psutil.Process(process.pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def scenario(
    name: str,
    offered: str,
    plans: list[LoadPlan],
    server: subprocess.Popen[bytes],
    goal: str,
    unit: str = "req/s",
) -> Row:
    server_before, pg_before = _server_cpu(server), postgres_cpu_seconds()
    result = run_load(plans)
    server_cpu = _server_cpu(server) - server_before
    pg_cpu = postgres_cpu_seconds() - pg_before
    rate = (result.events if unit == "events/s" else len(result.latencies)) / result.seconds
    row = Row(name, offered, result, rate, unit, goal, server_cpu, pg_cpu)
    print(_format(row), flush=True)
    return row


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _format(row: Row) -> str:
    r = row.result
    ok = sum(n for s, n in r.statuses.items() if 200 <= s < 300)
    others = {s: n for s, n in r.statuses.items() if not 200 <= s < 300}
    return (
        f"| {row.name} | {row.offered} | {row.unit_rate:,.0f} {row.unit} | "
        f"{_ms(percentile(r.latencies, 50))} | {_ms(percentile(r.latencies, 99))} | "
        f"{_ms(max(r.latencies))} | {ok:,} ok{', ' + str(others) if others else ''} | "
        f"{row.goal} | {row.server_cpu / r.seconds:.0%} / {row.postgres_cpu / r.seconds:.0%} / "
        f"{r.cpu_seconds / r.seconds:.0%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL admin URL")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per scenario")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--server-workers", type=int, default=1, help="stride serve --workers")
    parser.add_argument("--load-processes", type=int, default=1)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    name = "stride_bench_http"
    database_url = create_database(args.server, name)
    logs = Path(".stride") / "bench-http"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_server(database_url, port, args.server_workers, logs / "serve.log")
    rows: list[Row] = []
    try:
        tokens = prepare(database_url, args.users, port)
        worker_log = logs / "worker.log"
        subprocess.run(
            [STRIDE, "worker", "--once", "--database-url", database_url],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        n = args.load_processes
        d = args.duration

        def plans(kind: str, rate: float, concurrency: int) -> list[LoadPlan]:
            return [
                LoadPlan(kind, port, tokens, d, rate / n if rate else 0, concurrency, seed=i)
                for i in range(n)
            ]

        print(
            f"stride serve --workers {args.server_workers}; {args.users} users; {d:g}s per "
            f"scenario; CPU columns: server / PostgreSQL / load client, share of one core\n"
        )
        print("| scenario | offered | achieved | p50 ms | p99 ms | max ms | answers | goal | CPU |")
        print("|---|---|---|---|---|---|---|---|---|")
        rows.append(
            scenario(
                "GET one projection", "1,000 req/s", plans("get", 1000, 32), server, "p99 < 10 ms"
            )
        )
        worker = start_worker(database_url, worker_log)
        try:
            rows.append(
                scenario(
                    "POST one event (worker running)",
                    "200 req/s",
                    plans("post_one", 200, 16),
                    server,
                    "p99 < 25 ms",
                )
            )
            wait_for(lambda: open_jobs(database_url) == 0, 120, "the worker to drain")
            rows.append(
                scenario(
                    "read-your-write (POST, GET after_event; one idle worker)",
                    "50 pairs/s",
                    plans("ryw", 50, 16),
                    server,
                    "p99 < 50 ms",
                    unit="pairs/s",
                )
            )
        finally:
            stop(worker)
        batch = [
            LoadPlan("batch", port, tokens, d, 0, max(1, args.batch_concurrency // n), seed=i)
            for i in range(n)
        ]
        rows.append(
            scenario(
                "POST batches of 1,000 (closed loop, no worker)",
                f"{args.batch_concurrency} in flight",
                batch,
                server,
                ">= 20,000 events/s",
                unit="events/s",
            )
        )
    finally:
        stop(server)
        if not args.keep:
            drop_database(args.server, name)
    print(f"\nmachine: {os.cpu_count()} cores; server log: {logs / 'serve.log'}")


if __name__ == "__main__":
    main()
