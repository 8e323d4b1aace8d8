"""Web chat under load: many visitors on `/chat`, agents on `/agents`, next to an echo floor in the same run.

    .venv/bin/python bench/chat_load.py                          # 500 visitors, 20 agents, SQLite
    .venv/bin/python bench/chat_load.py --visitors 50 --duration 20                      # a quick check
    .venv/bin/python bench/chat_load.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Each server runs on the production server, gunicorn with one worker and a thread per WebSocket (threading
mode with simple-websocket holds a thread per open WebSocket, so --threads must exceed the connections):

* floor: bench/chat_echo_server.py, a bare Flask-SocketIO app that acknowledges each visitor's message at
  once and broadcasts it to the agents' room;
* ours: `wsgi:app` on a throwaway database (a temporary SQLite file, or a new database on the PostgreSQL
  server --database-url names, dropped afterwards), with one agent account per agent, each logged in through
  the login form; REDIS_URL is unset (the embedded default) unless --redis-url is given.

Load processes (python-socketio's asyncio client, WebSocket transport, loopback) connect the agents, then the
visitors (with an allowed Origin). After every connection is open, each visitor sends a message every
--interval seconds (uniformly between the two bounds), each with its own client_id; what is sent during
--warmup is not counted, then --duration seconds are measured. Per message: send -> acknowledgement at the
visitor, and send -> arrival of the "message.created"/"ticket.created" event carrying its id at every agent.
Memory per connection: the worker's RSS with every connection open minus before the first, divided by the
connections (from /proc). Server CPU per message: the worker's CPU time over the measured window.

The rate limits a real visitor meets are raised through the environment (every visitor here comes from
127.0.0.1), and so is the login limit for the agents' logins; see BENCH_LIMITS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pathlib
import pstats
import queue
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Self

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.databases import throwaway_database

TARGET_AGENT_P99_MS = 250.0
TARGET_RATIO = 3.0
SHOP_ORIGIN = "https://shop.example.com"
AGENT_PASSWORD = "bench-password-not-secret"
#: Raised for the benchmark: one IP (127.0.0.1) carries every visitor, and 20 agents log in at once. The bursts
#: are large next to the rates on purpose: a bucket whose handlers run late can be charged for time that went
#: backwards (see RESULTS.md), and burst / rate is how many seconds of that it absorbs.
BENCH_LIMITS = {
    "HELPDESK_CHAT_MESSAGES_PER_MINUTE": "60",
    "HELPDESK_CHAT_MESSAGE_BURST": "1000",
    "HELPDESK_CHAT_IP_EVENTS_PER_MINUTE": "100000",
    "HELPDESK_CHAT_IP_BURST": "1000000",
    "HELPDESK_LOGIN_RATE_LIMIT": "1000 per minute",
}
AGENT_EVENTS = ("message.created", "ticket.created")
AGENT_CONNECT_ATTEMPTS = 5
SETTLE_SECONDS = 0.5
#: As the inbox page does (static/live.js): an agent who falls silent goes offline.
AGENT_HEARTBEAT_SECONDS = 30


# --- the load process ---------------------------------------------------------------------------------

async def run_load(spec: dict) -> None:
    """Connect this process's agents and visitors, send on the parent's "go", report when told to close."""
    import socketio

    lag: list[float] = []
    lag_task = asyncio.create_task(_watch_loop_lag(lag))
    agents, arrivals = [], []
    failures: list[str] = []
    for agent in spec["agents"]:
        seen: dict[int, float] = {}

        def on_event(data=None, seen=seen):
            now = time.monotonic()
            message_id = data.get("message_id") if isinstance(data, dict) else None
            if message_id is not None and message_id not in seen:
                seen[message_id] = now

        headers = {"Origin": spec["agent_origin"]}
        if agent.get("cookie"):
            headers.update({"Cookie": agent["cookie"], "User-Agent": agent["user_agent"]})
        for attempt in range(1, AGENT_CONNECT_ATTEMPTS + 1):
            client = socketio.AsyncClient(reconnection=False)
            for event in AGENT_EVENTS:
                client.on(event, on_event, namespace="/agents")
            refusals: list = []
            client.on("connect_error", refusals.append, namespace="/agents")
            try:
                # A copy: the client takes the Cookie header out of the dict it is given.
                await client.connect(agent["url"], headers=dict(headers), transports=["websocket"],
                                     namespaces=["/agents"], wait_timeout=10)
            except Exception as error:  # noqa: BLE001 - counted and reported, the run goes on
                # A browser's Socket.IO client reconnects on its own; so does this agent, a few times.
                failures.append(f"agent (attempt {attempt}): {error} {refusals}")
                await _quietly(client.disconnect())
                await asyncio.sleep(0.5)
                continue
            agents.append(client)
            arrivals.append(seen)
            break

    visitors: list = []
    gate = asyncio.Semaphore(spec["connect_concurrency"])

    async def connect_visitor(index: int):
        client = socketio.AsyncClient(reconnection=False)
        async with gate:
            try:
                # Each visitor stays on one process, as a proxy with sticky sessions keeps it.
                url = spec["base_urls"][index % len(spec["base_urls"])]
                await client.connect(url, headers={"Origin": spec["origin"]}, auth={},
                                     transports=["websocket"], namespaces=["/chat"], wait_timeout=60)
            except Exception as error:  # noqa: BLE001 - counted and reported
                failures.append(f"visitor: {error}")
                return
        visitors.append((index, client))

    await asyncio.gather(*(connect_visitor(spec["first_visitor"] + n) for n in range(spec["visitors"])))
    _say(f"ready {len(visitors)} {len(agents)} {len(failures)}")

    t0 = float((await _hear("go")).split()[1])
    warmup, duration = spec["warmup"], spec["duration"]
    end_send = t0 + warmup + duration
    records: list[list] = []
    started_cpu = time.process_time()

    async def visitor_loop(index: int, client) -> None:
        rng = random.Random(spec["seed"] * 1_000_003 + index)
        low, high = spec["interval"]
        next_at = t0 + rng.uniform(0, min(high, warmup) if warmup > 0 else high)
        number = 0
        while next_at < end_send:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            number += 1
            client_id = f"{spec['run']}-{index}-{number}"
            record = [client_id, time.monotonic(), None, None, None]

            def on_ack(answer=None, record=record):
                record[2] = time.monotonic()
                if isinstance(answer, dict) and answer.get("ok"):
                    record[3] = answer.get("id")
                else:
                    record[4] = str(answer.get("error") or "refused") if isinstance(answer, dict) else "no answer"

            records.append(record)
            try:
                await client.emit("message", {"client_id": client_id, "text": f"bench {client_id} {record[1]:.6f}"},
                                  namespace="/chat", callback=on_ack)
            except Exception as error:  # noqa: BLE001 - the message counts as an error
                record[2], record[4] = time.monotonic(), f"send failed: {type(error).__name__}"
            next_at += rng.uniform(low, high)

    async def heartbeat_loop(client) -> None:
        while True:
            await asyncio.sleep(AGENT_HEARTBEAT_SECONDS)
            with contextlib.suppress(Exception):
                await client.emit("heartbeat", namespace="/agents")

    heartbeats = [asyncio.create_task(heartbeat_loop(client)) for client in agents]
    await asyncio.gather(*(visitor_loop(index, client) for index, client in visitors))
    drain_until = time.monotonic() + spec["ack_timeout"]
    while time.monotonic() < drain_until and any(record[2] is None for record in records):
        await asyncio.sleep(0.05)
    busy_cpu = time.process_time() - started_cpu
    _say("drained")
    await _hear("close")

    for task in (lag_task, *heartbeats):
        task.cancel()
    result = {
        "records": records,
        "arrivals": [{str(key): value for key, value in seen.items()} for seen in arrivals],
        "failures": failures,
        "connected_visitors": len(visitors),
        "connected_agents": len(agents),
        "loop_lag": _percentiles(lag),
        "cpu_seconds": busy_cpu,
        "wall_seconds": warmup + duration,
    }
    pathlib.Path(spec["result_path"]).write_text(json.dumps(result))
    await asyncio.gather(*(_quietly(client.disconnect()) for client in [*agents, *(c for _, c in visitors)]))
    _say("closed")


async def _watch_loop_lag(into: list[float]) -> None:
    # How late the event loop wakes up: if the load process itself is the bottleneck, this shows it.
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.1)
        into.append(time.monotonic() - before - 0.1)


async def _quietly(awaitable) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(awaitable, 10)


async def _hear(word: str) -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.startswith(word):
        raise SystemExit(f"expected {word!r} from the parent, got {line!r}")
    return line


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- agents for the app --------------------------------------------------------------------------------

def prepare_database(agents: int) -> None:
    """Bring the database the environment names to the newest schema and add `agents` agent accounts."""
    import flask_migrate

    from helpdesk import create_app
    from helpdesk.agents import create_agent
    from helpdesk.extensions import db

    app = create_app()
    with app.app_context():
        flask_migrate.upgrade()
        for number in range(1, agents + 1):
            create_agent(agent_email(number), f"Bench Agent {number}", AGENT_PASSWORD)
        db.session.commit()


def agent_email(number: int) -> str:
    return f"bench-agent-{number}@example.com"


# --- servers ---------------------------------------------------------------------------------------------

class Server:
    """A gunicorn master with one worker, started from the repository root; output goes to a log file."""

    def __init__(self, label: str, app_spec: list[str], env: dict[str, str], port: int, threads: int,
                 health_path: str, log_path: pathlib.Path):
        self.label, self.port, self.log_path = label, port, log_path
        self.base_url = f"http://127.0.0.1:{port}"
        self.health_url = self.base_url + health_path
        self.command = gunicorn_command(app_spec, port, threads)
        self.env = env
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        try:
            self._wait_until_answering(timeout=120)
        except (RuntimeError, TimeoutError) as error:
            self.__exit__(None, None, None)
            raise SystemExit(f"{self.label} did not start: {error}\n{self.log_path.read_text()[-3000:]}") from None
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_answering(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                # The first request may be slow (the worker finishes importing): give it time.
                if requests.get(self.health_url, timeout=30).status_code < 500:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise TimeoutError(f"{self.health_url} did not answer within {timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        from tests.servers import stop_process

        if self.process is not None:
            stop_process(self.process, timeout=40)
        self._log.close()

    def worker_pid(self) -> int:
        children = pathlib.Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        if len(children) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {children}")
        return int(children[0])


def gunicorn_command(app_spec: list[str], port: int, threads: int) -> list[str]:
    """The production server as README's Deploying section runs it: one worker, threads, simple-websocket."""
    return [
        sys.executable, "-m", "gunicorn", "-c", "bench/chat_sampler.py",
        "-w", "1", "--threads", str(threads),
        # gthread accepts at most this many connections at once; each WebSocket stays one for its life.
        "--worker-connections", str(max(1000, threads + 100)),
        "-b", f"127.0.0.1:{port}", "--timeout", "120", "--graceful-timeout", "20",
        *app_spec,
    ]


def server_errors(*log_paths: pathlib.Path) -> dict[str, int]:
    """Count what the servers logged as errors: each traceback by its exception line, other ERROR lines."""
    counts: dict[str, int] = {}
    lines = [line for log_path in log_paths for line in log_path.read_text(errors="replace").splitlines()]
    for line in lines:
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Refused)\b", line) and not line.startswith("The above"):
            key = line[:120]
        elif " ERROR " in line and "handler error" not in line:
            key = line.split(" ERROR ", 1)[1][:120]
        else:
            continue
        key = re.sub(r"\S*\d\S*", "…", key)  # ids and numbers vary; what failed does not
        counts[key] = counts.get(key, 0) + 1
    return counts


def process_memory(*pids: int) -> dict[str, int]:
    """Return the processes' resident sets (KiB) and thread counts added up, from /proc."""
    status = {"VmRSS": 0, "Threads": 0}
    for pid in pids:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in status:
                status[key] += int(value.split()[0])
    return {"rss_kib": status["VmRSS"], "threads": status["Threads"]}


def process_cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "REDIS_URL", "FLASK_DEBUG") and not key.startswith("HELPDESK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def app_env(database_url: str, instance: pathlib.Path, base_url: str, redis_url: str | None) -> dict[str, str]:
    env = base_env()
    env.update(BENCH_LIMITS)
    env.update({
        "DATABASE_URL": database_url,
        "HELPDESK_INSTANCE_PATH": str(instance),
        "SECRET_KEY": "bench-secret-key-not-for-production",
        "HELPDESK_PUBLIC_URL": base_url,
        "HELPDESK_CHAT_ALLOWED_ORIGINS": SHOP_ORIGIN,
    })
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def run_checked(command: list[str], env: dict[str, str], log: pathlib.Path) -> None:
    with open(log, "ab") as output:
        completed = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} … exited with {completed.returncode}:\n"
                         f"{log.read_text()[-3000:]}")


# --- one measured server ---------------------------------------------------------------------------------

class LoadProcess:
    """One load process: its spec goes in a file, its control lines come back on stdout."""

    def __init__(self, spec: dict, folder: pathlib.Path, number: int):
        spec_path = folder / f"load-{spec['run']}-{number}.json"
        spec_path.write_text(json.dumps(spec))
        self.result_path = pathlib.Path(spec["result_path"])
        self.log = open(folder / f"load-{spec['run']}-{number}.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "_load", str(spec_path)],
            cwd=REPO_ROOT, env=base_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True, bufsize=1,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, word: str, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(
                f"a load process did not say {word!r} within {timeout:.0f} s; see {self.log.name}") from None
        if line is None or not line.startswith(word):
            raise SystemExit(f"a load process said {line!r} instead of {word!r}; see {self.log.name}")
        return line

    def tell(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        from tests.servers import stop_process

        stop_process(self.process, timeout=30)
        self.log.close()


def measure(servers: list[Server], args, agents: list[dict], folder: pathlib.Path, run: str) -> dict:
    """Drive `servers` (the processes of one deployment) with the load processes and return the figures."""
    pids = [server.worker_pid() for server in servers]
    label = servers[0].label
    base_urls = [server.base_url for server in servers]
    agents = [{**agent, "url": base_urls[number % len(base_urls)]} for number, agent in enumerate(agents)]
    before = process_memory(*pids)
    processes = []
    count = args.load_processes
    try:
        for number in range(count):
            share = range(number, args.visitors, count)
            spec = {
                "run": run, "base_urls": base_urls, "origin": SHOP_ORIGIN, "agent_origin": base_urls[0],
                "visitors": len(share), "first_visitor": number * 1_000_000,
                "agents": agents[number::count], "warmup": args.warmup, "duration": args.duration,
                "interval": [args.interval[0], args.interval[1]], "ack_timeout": args.ack_timeout,
                "seed": args.seed, "connect_concurrency": 10,
                "result_path": str(folder / f"result-{run}-{number}.json"),
            }
            processes.append(LoadProcess(spec, folder, number))
        progress(f"{label}: connecting {args.agents} agents and {args.visitors} visitors")
        connect_timeout = 120 + args.visitors / 5
        ready = [process.expect("ready", connect_timeout).split()[1:] for process in processes]
        connected = sum(int(visitors) + int(agents) for visitors, agents, _ in ready)
        time.sleep(SETTLE_SECONDS)  # let the last connections' threads settle before reading the memory
        with_connections = process_memory(*pids)
        t0 = time.monotonic() + SETTLE_SECONDS
        for process in processes:
            process.tell(f"go {t0:.6f}")
        progress(f"{label}: {connected} connected; sending for {args.warmup:g} + {args.duration:g} s")
        time.sleep(max(0.0, t0 + args.warmup - time.monotonic()))
        cpu_start = sum(map(process_cpu_seconds, pids))
        time.sleep(max(0.0, t0 + args.warmup + args.duration - time.monotonic()))
        cpu_window = sum(map(process_cpu_seconds, pids)) - cpu_start
        for process in processes:
            process.expect("drained", args.ack_timeout + 60)
        progress(f"{label}: drained")
        time.sleep(min(2.0, args.ack_timeout))  # agents' events for the last acknowledged messages
        after_load = process_memory(*pids)
        for process in processes:
            process.tell("close")
        for process in processes:
            process.expect("closed", 60)
        progress(f"{label}: closed")
        results = [json.loads(process.result_path.read_text()) for process in processes]
    finally:
        for process in processes:
            process.stop()
    figures = summarize(results, t0 + args.warmup, args.duration)
    figures.update({
        "connections": connected,
        "rss_before_kib": before["rss_kib"], "rss_connected_kib": with_connections["rss_kib"],
        "rss_after_load_kib": after_load["rss_kib"],
        "threads_before": before["threads"], "threads_connected": with_connections["threads"],
        "kib_per_connection": (with_connections["rss_kib"] - before["rss_kib"]) / max(connected, 1),
        "server_cpu_seconds": cpu_window,
        "cpu_ms_per_message": 1000 * cpu_window / max(figures["acked"], 1),
    })
    return figures


def summarize(results: list[dict], window_start: float, duration: float) -> dict:
    """Join the visitors' records with the agents' arrivals; keep messages sent inside the measured window."""
    window_end = window_start + duration
    acks, errors, unacked, measured = [], {}, 0, []
    for result in results:
        for _client_id, sent, acked, message_id, error in result["records"]:
            if not window_start <= sent < window_end:
                continue
            if acked is None:
                unacked += 1
            elif error is not None:
                errors[error] = errors.get(error, 0) + 1
            else:
                acks.append(acked - sent)
                measured.append((sent, message_id))
    arrivals = [seen for result in results for seen in result["arrivals"]]
    to_agents, missing = [], 0
    for sent, message_id in measured:
        for seen in arrivals:
            arrived = seen.get(str(message_id))
            if arrived is None:
                missing += 1
            else:
                to_agents.append(arrived - sent)
    lags = [result["loop_lag"] for result in results]
    return {
        "sent": len(acks) + unacked + sum(errors.values()),
        "acked": len(acks),
        "messages_per_second": len(acks) / duration,
        "ack": _percentiles(acks),
        "to_agents": _percentiles(to_agents),
        "deliveries": len(to_agents),
        "missing_deliveries": missing,
        "errors": errors,
        "unacked": unacked,
        "connect_failures": sum(len(result["failures"]) for result in results),
        "failure_samples": [failure for result in results for failure in result["failures"]][:3],
        "agents": len(arrivals),
        "load_cpu_share": max(result["cpu_seconds"] / result["wall_seconds"] for result in results),
        "load_loop_lag_p99_ms": max(lag["p99"] for lag in lags) * 1000 if lags else 0.0,
    }


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    ordered = sorted(values)
    if len(ordered) == 1:
        return {"p50": ordered[0], "p99": ordered[0], "max": ordered[0], "n": 1}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cuts[49], "p99": cuts[98], "max": ordered[-1], "n": len(ordered)}


# --- the benchmark ---------------------------------------------------------------------------------------

def run_echo(args, folder: pathlib.Path) -> dict:
    from tests.servers import free_port

    ports = [free_port() for _ in range(args.processes)]
    env = base_env()
    env["BENCH_ECHO_ORIGINS"] = f"{SHOP_ORIGIN},http://127.0.0.1:{ports[0]}"
    if args.redis_url:
        env["BENCH_ECHO_MESSAGE_QUEUE"] = args.redis_url
    servers = [Server("the echo floor", ["--pythonpath", "bench", "chat_echo_server:create_echo_app()"],
                      {**env, "BENCH_ECHO_PROCESS": str(number)}, port, args.threads, "/health",
                      folder / f"server-echo-{number}.log")
               for number, port in enumerate(ports)]
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        agents = [{} for _ in range(args.agents)]
        figures = measure(servers, args, agents, folder, "echo")
    figures["server_errors"] = server_errors(*(server.log_path for server in servers))
    return figures


def run_app(args, folder: pathlib.Path) -> dict:
    from tests.servers import free_port, login_session

    with throwaway_database(args.database_url, folder) as database_url:
        ports = [free_port() for _ in range(args.processes)]
        # Every process is told the same public address, as behind the proxy; agents log in on the first.
        base_url = f"http://127.0.0.1:{ports[0]}"
        env = app_env(database_url, folder / "instance", base_url, args.redis_url)
        progress(f"the helpdesk: preparing the database ({'PostgreSQL' if args.database_url else 'SQLite'}) "
                 f"and {args.agents} agents")
        run_checked([sys.executable, str(pathlib.Path(__file__).resolve()), "_prepare", str(args.agents)], env,
                    folder / "setup.log")
        if args.profile or args.cpu_profile:
            env["BENCH_SAMPLE_FILE"] = str(folder / "samples.json")
            env["BENCH_SAMPLE_HZ"] = str(args.sample_hz)
        if args.cpu_profile:
            env["BENCH_CPU_PROFILE_FILE"] = str(pathlib.Path(args.cpu_profile).resolve())
        servers = [Server("the helpdesk", ["wsgi:app"], env, port, args.threads, "/login",
                          folder / f"server-app-{number}.log") for number, port in enumerate(ports)]
        with contextlib.ExitStack() as stack:
            for server in servers:
                stack.enter_context(server)
            progress("the helpdesk: server up, agents logging in")
            agents = []
            for number in range(1, args.agents + 1):
                http = login_session(base_url, agent_email(number), AGENT_PASSWORD, user_agent="helpdesk-bench")
                agents.append({"cookie": "; ".join(f"{name}={value}" for name, value in http.cookies.items()),
                               "user_agent": http.headers["User-Agent"]})
            figures = measure(servers, args, agents, folder, "app")
        figures["server_errors"] = server_errors(*(server.log_path for server in servers))
    if args.profile:
        samples_path = folder / "samples.json"
        if samples_path.exists():
            shutil.copyfile(samples_path, args.profile)
        else:
            print("the sampler wrote nothing; see the server log", file=sys.stderr)
    return figures


def print_samples(report: dict, path: str) -> None:
    """Print where the handlers' time went, as fractions of the sampled handler time."""
    total = max(report["handler_samples"], 1)
    print(f"\nsampled the app's event handlers at {report['hz']:.0f} Hz for {report['seconds']:.0f} s: "
          f"{report['handler_samples']} handler stacks in {report['samples']} samples "
          f"(sampler CPU {report['sampler_cpu']:.1f} s); full counts in {path}")
    print("in-flight handlers by event: " + ", ".join(
        f"{event} {count / total:.0%}" for event, count in sorted(report["by_event"].items(), key=lambda i: -i[1])))
    print("\ninclusive (share of handler wall time spent in the function or below, waits included):")
    for where, count in list(report["inclusive"].items())[:45]:
        print(f"  {count / total:6.1%}  {where}")
    active = max(report["active_samples"], 1)
    print(f"\nworking, not parked on a lock or pool ({report['active_samples'] / total:.0%} of handler time); "
          "share of that time:")
    for where, count in list(report["active"].items())[:60]:
        print(f"  {count / active:6.1%}  {where}")
    holds = report["write_holds"]
    if holds["n"]:
        print(f"\nSQLite write lock held (BEGIN IMMEDIATE to commit): {holds['n']} times, "
              f"p50 {1000 * holds['p50']:.1f} ms, p99 {1000 * holds['p99']:.1f} ms, "
              f"{holds['total'] / report['seconds']:.0%} of the time")
    holds = report.get("pool_holds", {"n": 0})
    if holds["n"]:
        print(f"pooled connection held (checkout to checkin): {holds['n']} times, p50 {1000 * holds['p50']:.1f} ms, "
              f"p99 {1000 * holds['p99']:.1f} ms")
    print("\nexclusive (innermost Python frame):")
    for where, count in list(report["exclusive"].items())[:25]:
        print(f"  {count / total:6.1%}  {where}")
    messages = max(report["calls"].get("/chat message", 0), 1)
    print(f"\nSQL statements: {sum(report['statements'].values()) / messages:.1f} per /chat message "
          f"({messages} messages handled, connects and heartbeats included in the statements):")
    for kind, count in list(report["statements"].items())[:15]:
        seconds = report["statement_seconds"].get(kind, 0.0)
        print(f"  {count / messages:6.2f}/msg  {1000 * seconds / count:7.2f} ms each  {kind}")
    print("\nworker threads at the last dump, by role: " + ", ".join(
        f"{role} {count}" for role, count in sorted(report.get("threads_by_role", {}).items(), key=lambda i: -i[1])))
    print("worker CPU seconds by thread role: " + ", ".join(
        f"{role} {seconds:.1f}" for role, seconds in report["thread_cpu"].items()))


def print_cpu_profile(path: str) -> None:
    """Print the handlers' CPU time per /chat message: the project's functions, the ORM and the driver."""
    stats = pstats.Stats(path)
    handled = max(sum(calls for (filename, _, name), (_, calls, *_) in stats.stats.items()
                      if name == "on_message" and filename.endswith("chat/namespace.py")), 1)
    total = stats.total_tt
    print(f"\nhandlers' CPU time under cProfile (thread CPU clock): {total:.1f} s for {handled} /chat messages, "
          f"{1000 * total / handled:.2f} ms per message, profiler overhead included (about twofold)")
    print("  ms/msg  share  calls/msg  function (cumulative)")
    rows = []
    for (filename, line, name), (_, calls, _, cumulative, _) in stats.stats.items():
        is_ours = filename.startswith(str(REPO_ROOT)) and "/.venv/" not in filename and "/bench/" not in filename
        is_key = (name in ("_execute_internal", "flush", "commit") and filename.endswith("orm/session.py")) or (
            "sqlite3.Cursor" in name or (name == "execute" and filename.endswith("psycopg/cursor.py")))
        if is_ours or is_key:
            where = filename.removeprefix(str(REPO_ROOT) + "/").split("site-packages/")[-1]
            rows.append((cumulative, calls, f"{where}:{line}({name})"))
    for cumulative, calls, where in sorted(rows, reverse=True)[:40]:
        print(f"  {1000 * cumulative / handled:6.2f} {cumulative / total:6.1%} {calls / handled:9.2f}  {where}")


def print_table(args, rows: list[tuple[str, dict]], kind: str) -> None:
    print()
    print(f"{args.visitors} visitors + {args.agents} agents, "
          f"messages every {args.interval[0]:g}-{args.interval[1]:g} s, "
          f"{args.warmup:g} s warm-up + {args.duration:g} s measured; "
          f"{args.processes} x gunicorn -w 1 --threads {args.threads}; "
          f"{kind}; {args.load_processes} load processes")
    print(f"{'server':<12} {'conns':>5} {'msg/s':>6} {'ack p50':>8} {'ack p99':>8} {'agt p50':>8} {'agt p99':>8} "
          f"{'errors':>6} {'unacked':>7} {'missing':>7} {'KiB/conn':>8} {'cpu ms/msg':>10} {'gen lag p99':>11}")
    for label, figures in rows:
        print(f"{label:<12} {figures['connections']:>5} {figures['messages_per_second']:>6.1f} "
              f"{_ms(figures['ack']['p50'])} {_ms(figures['ack']['p99'])} "
              f"{_ms(figures['to_agents']['p50'])} {_ms(figures['to_agents']['p99'])} "
              f"{sum(figures['errors'].values()):>6} {figures['unacked']:>7} {figures['missing_deliveries']:>7} "
              f"{figures['kib_per_connection']:>8.1f} {figures['cpu_ms_per_message']:>10.2f} "
              f"{figures['load_loop_lag_p99_ms']:>8.1f} ms")
    for label, figures in rows:
        details = [(f"RSS {figures['rss_before_kib'] / 1024:.0f} -> {figures['rss_connected_kib'] / 1024:.0f} MiB "
                    f"connected -> {figures['rss_after_load_kib'] / 1024:.0f} MiB after the load"),
                   f"threads {figures['threads_before']} -> {figures['threads_connected']}",
                   f"sent {figures['sent']}, {figures['deliveries']} deliveries to {figures['agents']} agents",
                   f"load process CPU {figures['load_cpu_share']:.0%} of one core at most"]
        if figures["errors"]:
            details.append(f"errors {figures['errors']}")
        if figures["connect_failures"]:
            details.append(f"{figures['connect_failures']} connection attempts failed, "
                           f"e.g. {figures['failure_samples']}")
        if figures.get("server_errors"):
            worst = sorted(figures["server_errors"].items(), key=lambda item: -item[1])[:4]
            details.append("server log: " + "; ".join(f"{count} x {line}" for line, count in worst))
        print(f"  {label}: " + "; ".join(details))
    figures = dict(rows)
    if "helpdesk" in figures and "echo floor" in figures:
        ours, floor = figures["helpdesk"], figures["echo floor"]
        agent_ratio = ours["to_agents"]["p99"] / floor["to_agents"]["p99"]
        ack_ratio = ours["ack"]["p99"] / floor["ack"]["p99"]
        print(f"ratios helpdesk/floor: p99 to agents {agent_ratio:.1f}x, p99 ack {ack_ratio:.1f}x, "
              f"p50 to agents {ours['to_agents']['p50'] / floor['to_agents']['p50']:.1f}x, "
              f"memory per connection {ours['kib_per_connection'] / max(floor['kib_per_connection'], 0.1):.1f}x")
    if "helpdesk" in figures:
        p99 = figures["helpdesk"]["to_agents"]["p99"] * 1000
        verdict = [(f"p99 to agents {p99:.0f} ms < {TARGET_AGENT_P99_MS:.0f} ms: "
                    f"{'met' if p99 < TARGET_AGENT_P99_MS else 'MISSED'}")]
        if "echo floor" in figures:
            verdict.append(f"within {TARGET_RATIO:g}x of the floor: "
                           f"{'met' if agent_ratio <= TARGET_RATIO else 'MISSED'}")
        print("target: " + "; ".join(verdict))


def _ms(seconds: float) -> str:
    return f"{'-':>8}" if math.isnan(seconds) else f"{seconds * 1000:>6.0f}ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=500, help="visitors on /chat (default 500)")
    parser.add_argument("--agents", type=int, default=20, help="agents on /agents (default 20)")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds (default 60)")
    parser.add_argument("--warmup", type=float, default=10,
                        help="seconds of sending before the measurement; every visitor's first message, which "
                             "opens its ticket, falls in it (default 10)")
    parser.add_argument("--interval", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"),
                        help="seconds between one visitor's messages, uniform (default 2 6)")
    parser.add_argument("--threads", type=int, default=None,
                        help="gunicorn --threads (default: the connections plus 64)")
    parser.add_argument("--load-processes", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--processes", type=int, default=1,
                        help="server processes, each on its own port as README's Deploying section runs them; "
                             "visitors and agents are spread over them as a proxy with sticky sessions would, "
                             "and more than one needs --redis-url, their message queue (default 1)")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server (any database on it) to create the throwaway database on; "
                             "default a temporary SQLite file")
    parser.add_argument("--redis-url", default=None, help="REDIS_URL for the app (default unset: embedded)")
    parser.add_argument("--only", choices=("both", "app", "echo"), default="both")
    parser.add_argument("--ack-timeout", type=float, default=15,
                        help="how long after the last send an acknowledgement may still come (default 15)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", metavar="FILE",
                        help="sample the app's event handlers (bench/chat_sampler.py) into FILE and print the top")
    parser.add_argument("--cpu-profile", metavar="FILE",
                        help="also run every handler of the app under cProfile with a CPU clock, into FILE "
                             "(pstats); slows the handlers down, so use a lighter load")
    parser.add_argument("--sample-hz", type=float, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server and load logs)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    sub = parser.add_subparsers(dest="mode")
    load_parser = sub.add_parser("_load", help="(internal) run one load process")
    load_parser.add_argument("spec")
    prepare_parser = sub.add_parser("_prepare", help="(internal) migrate the database, add the agents")
    prepare_parser.add_argument("agents", type=int)
    args = parser.parse_args(argv)

    if args.mode == "_load":
        asyncio.run(run_load(json.loads(pathlib.Path(args.spec).read_text())))
        return
    if args.mode == "_prepare":
        prepare_database(args.agents)
        return

    if args.database_url and not args.database_url.startswith(("postgres://", "postgresql")):
        raise SystemExit("--database-url must name a PostgreSQL server (or be left out for SQLite)")
    if args.processes > 1 and not args.redis_url:
        raise SystemExit("--processes above 1 needs --redis-url: events reach agents on other processes through it")
    per_process = math.ceil((args.visitors + args.agents) / args.processes)
    if args.threads is None:
        args.threads = per_process + 64
    if args.threads < per_process + 8:
        print(f"warning: {args.threads} threads cannot hold {per_process} WebSockets per process; "
              "the connections beyond the threads wait for one to free up", file=sys.stderr)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers and load processes
    kind = "PostgreSQL" if args.database_url else "SQLite"
    kind += f", REDIS_URL {'set' if args.redis_url else 'unset (embedded default)'}"
    folder = pathlib.Path(tempfile.mkdtemp(prefix="hd-chat-bench-"))
    rows = []
    finished = False
    try:
        if args.only in ("both", "echo"):
            rows.append(("echo floor", run_echo(args, folder)))
            print_table(args, rows, kind)
        if args.only in ("both", "app"):
            rows.append(("helpdesk", run_app(args, folder)))
            print_table(args, rows, kind)
            if args.profile and pathlib.Path(args.profile).exists():
                print_samples(json.loads(pathlib.Path(args.profile).read_text()), args.profile)
            if args.cpu_profile and pathlib.Path(args.cpu_profile).exists():
                print_cpu_profile(args.cpu_profile)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(dict(rows), indent=1))
        finished = True
    finally:
        if args.keep or not finished:  # after a failure, the logs it points to stay
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
