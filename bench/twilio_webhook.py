"""Signed inbound SMS webhooks against the helpdesk under gunicorn, next to a floor measured in the same run.

    .venv/bin/python bench/twilio_webhook.py                       # SQLite, 1000 requests, concurrency 16, 3 pairs
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/twilio_webhook.py

Each pair, each side on a fresh database (a temporary SQLite file, or with DATABASE_URL a throwaway PostgreSQL
database created on that server and dropped afterwards), both served the same way, as the README deploys the
app: `gunicorn -w 1 --threads 100 -b 127.0.0.1:PORT` (one worker with threads, which Flask-SocketIO needs):

* floor: bench/twilio_floor_app.py, a bare Flask app whose one endpoint validates nothing and inserts one row;
* ours: `wsgi:app` with a Twilio account from TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN (the embedded default's way),
  POST /channels/twilio/sms: signature check, the form committed, TwiML; the ingest_texts job it starts (a
  thread of the same process) then stores each text (customer, threading, triage).

A separate load process fires the same requests at each: signed as Twilio signs them (RequestValidator), distinct
MessageSids, from a few hundred senders, at a fixed concurrency over keep-alive connections on loopback, after a
warm-up. It reports requests/s and p50/p99 latency; afterwards the script waits for the ingest job to store
every text (the drain) and checks every request was answered 200 and stored exactly once. The webhook rate
limit is raised for the run (it would otherwise answer 429 past 600 a minute). The figure to compare is the
ratio ours/floor of requests/s, median of the pairs; stored/s counts the whole way, load and drain.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pathlib
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.databases import throwaway_database

TARGET_RATIO = 0.40
SMS_PATH = "/channels/twilio/sms"
GUNICORN_SETTINGS = ["-w", "1", "--threads", "100"]


# --- the load process ------------------------------------------------------------------------------------

def signed_requests(count: int, account_sid: str, auth_token: str, url: str, seed: int) -> list[tuple[bytes, str]]:
    """Return `count` url-encoded inbound SMS forms with their X-Twilio-Signature, each a distinct MessageSid."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(auth_token)
    chance = random.Random(seed)
    senders = [f"+4670{chance.randrange(1000000, 9999999)}" for _ in range(300)]
    texts = ["Where is my parcel?", "I want a refund for order {n}", "My invoice {n} is wrong, please check",
             "Thanks, that helped!", "The app crashes when I log in", "Can I change my delivery address?",
             "Hej! Jag har inte fått min beställning {n}", "Necesito ayuda con mi pedido {n}"]
    requests_ = []
    for _ in range(count):
        form = {
            "ToCountry": "US", "SmsMessageSid": "", "NumMedia": "0", "ToCity": "", "FromZip": "", "SmsSid": "",
            "FromState": "", "SmsStatus": "received", "FromCity": "", "Body": chance.choice(texts).format(
                n=chance.randrange(1000, 99999)), "FromCountry": "SE", "To": "+15005550006", "ToZip": "",
            "NumSegments": "1", "MessageSid": "SM" + uuid.UUID(int=chance.getrandbits(128)).hex,
            "AccountSid": account_sid, "From": chance.choice(senders), "ApiVersion": "2010-04-01",
        }
        form["SmsMessageSid"] = form["SmsSid"] = form["MessageSid"]
        requests_.append((urllib.parse.urlencode(form).encode(), validator.compute_signature(url, form)))
    return requests_


def fire(port: int, payloads: list[tuple[bytes, str]], concurrency: int, time_limit: float) -> dict:
    """POST every payload with `concurrency` keep-alive connections; return timings and statuses."""
    next_index = iter(range(len(payloads)))
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + time_limit

    def worker():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, codes = [], {}
        while time.monotonic() < deadline:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            body, signature = payloads[index]
            started = time.perf_counter()
            try:
                connection.request("POST", SMS_PATH, body=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            mine.append(time.perf_counter() - started)
            codes[status] = codes.get(status, 0) + 1
        connection.close()
        with lock:
            latencies.extend(mine)
            for status, count in codes.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "statuses": {str(status): count for status, count in sorted(statuses.items())}}


def load_main(args) -> None:
    url = f"http://127.0.0.1:{args.port}{SMS_PATH}"
    payloads = signed_requests(args.warmup + args.requests, args.account_sid, args.auth_token, url, args.seed)
    warmup = fire(args.port, payloads[:args.warmup], args.concurrency, args.time_limit)
    measured = fire(args.port, payloads[args.warmup:], args.concurrency, args.time_limit)
    measured["warmup_statuses"] = warmup["statuses"]
    measured["warmup_seconds"] = warmup["seconds"]
    print(json.dumps(measured))


# --- servers and databases -------------------------------------------------------------------------------

def count_rows(database_url: str, sql: str) -> int:
    import sqlalchemy as sa

    from helpdesk.config import _normalize_database_url

    engine = sa.create_engine(_normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(port: int, process: subprocess.Popen, log: pathlib.Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/")
            connection.getresponse().read()
            connection.close()
            return
        time.sleep(0.2)
    raise SystemExit(f"gunicorn on port {port} did not answer within {timeout} s")


@contextlib.contextmanager
def gunicorn(target: str, env: dict[str, str], port: int, log: pathlib.Path):
    """Serve `target` (module:variable) with the deployment's gunicorn settings on `port`."""
    command = [sys.executable, "-m", "gunicorn", *GUNICORN_SETTINGS, "-b", f"127.0.0.1:{port}",
               "--error-logfile", "-", target]
    with open(log, "ab") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until_listening(port, process, log)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("REDIS_URL", "DATABASE_URL") and not key.startswith(("TWILIO_", "HELPDESK_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def run_load(port: int, account_sid: str, auth_token: str, args, log: pathlib.Path) -> dict:
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "load", "--port", str(port),
               "--account-sid", account_sid, "--auth-token", auth_token, "--requests", str(args.requests),
               "--warmup", str(args.warmup), "--concurrency", str(args.concurrency), "--seed", str(args.seed),
               "--time-limit", str(args.time_limit)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=base_env(), capture_output=True, text=True, check=False)
    with open(log, "a") as output:
        output.write(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise SystemExit(f"the load process failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_floor(server_url, folder, args, pair) -> dict:
    with throwaway_database(server_url, folder) as database_url:
        port = free_port()
        env = {**base_env(), "FLOOR_DATABASE_URL": database_url}
        with gunicorn("bench.twilio_floor_app:app", env, port, folder / f"floor-{pair}.log"):
            result = run_load(port, "AC" + "0" * 32, "floor-validates-nothing", args, folder / f"load-{pair}.log")
        result["stored"] = count_rows(database_url, "SELECT count(*) FROM floor_text")
    result["drain_s"], result["ingest_rate"] = 0.0, result["rate"]
    return result


def measure_ours(server_url, folder, args, pair) -> dict:
    with throwaway_database(server_url, folder) as database_url:
        port = free_port()
        account_sid, auth_token = "AC" + uuid.uuid4().hex, uuid.uuid4().hex
        env = {**base_env(), "DATABASE_URL": database_url, "SECRET_KEY": "bench-secret-key-not-for-production",
               "HELPDESK_INSTANCE_PATH": str(folder / f"instance-{pair}"),
               "HELPDESK_PUBLIC_URL": f"http://127.0.0.1:{port}", "TWILIO_ACCOUNT_SID": account_sid,
               "TWILIO_AUTH_TOKEN": auth_token, "TWILIO_FROM_NUMBER": "+15005550006",
               "TWILIO_WEBHOOK_RATE_LIMIT": "1000000 per minute"}
        upgrade = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=REPO_ROOT,
                                 env=env, capture_output=True, text=True, check=False)
        if upgrade.returncode != 0:
            raise SystemExit(f"db upgrade failed:\n{upgrade.stderr[-3000:]}")
        with gunicorn("wsgi:app", env, port, folder / f"ours-{pair}.log"):
            result = run_load(port, account_sid, auth_token, args, folder / f"load-{pair}.log")
            # The webhook answers once the form is kept; the ingest job may still be storing texts.
            result["drain_s"] = wait_for_ingest(database_url, args.warmup + args.requests)
        result["stored"] = count_rows(database_url, "SELECT count(*) FROM message")
    # The whole way, the warm-up's texts included: answered and stored in their tickets.
    result["ingest_rate"] = ((args.warmup + args.requests)
                             / (result["warmup_seconds"] + result["seconds"] + result["drain_s"]))
    return result


def wait_for_ingest(database_url: str, expected: int, timeout: float = 600.0) -> float:
    """Wait until `expected` texts are stored in tickets and the inbound queue is empty; return the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        waiting = count_rows(database_url, "SELECT count(*) FROM inbound_queue_item")
        if not waiting and count_rows(database_url, "SELECT count(*) FROM message") >= expected:
            break
        time.sleep(0.05)
    return time.monotonic() - started


def check(side: str, result: dict, args) -> None:
    expected = args.warmup + args.requests
    answered = result["statuses"].get("200", 0) + result["warmup_statuses"].get("200", 0)
    if answered != expected or result["stored"] != expected:
        raise SystemExit(f"{side}: {answered} of {expected} requests answered 200, {result['stored']} stored: "
                         f"{result['statuses']} (warm-up {result['warmup_statuses']})")


# --- profiling the webhook path in-process ---------------------------------------------------------------

def profile_main(args, server_url, folder) -> None:
    """cProfile `args.requests` signed webhooks through the Flask test client, one after another."""
    import cProfile
    import pstats

    with throwaway_database(server_url, folder) as database_url:
        account_sid, auth_token = "AC" + uuid.uuid4().hex, uuid.uuid4().hex
        os.environ.update({"DATABASE_URL": database_url, "SECRET_KEY": "bench-secret-key-not-for-production",
                           "HELPDESK_INSTANCE_PATH": str(folder / "instance-profile"),
                           "HELPDESK_PUBLIC_URL": "http://localhost", "TWILIO_ACCOUNT_SID": account_sid,
                           "TWILIO_AUTH_TOKEN": auth_token, "TWILIO_WEBHOOK_RATE_LIMIT": "1000000 per minute"})
        os.environ.pop("REDIS_URL", None)
        from flask_migrate import upgrade

        from helpdesk import create_app

        app = create_app()
        with app.app_context():
            upgrade()
        payloads = signed_requests(args.warmup + args.requests, account_sid, auth_token,
                                   "http://localhost" + SMS_PATH, args.seed)
        client = app.test_client()

        def post(body, signature):
            response = client.post(SMS_PATH, data=body, headers={
                "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
            assert response.status_code == 200, response.status_code

        for body, signature in payloads[:args.warmup]:
            post(body, signature)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for body, signature in payloads[args.warmup:]:
            post(body, signature)
        profiler.disable()
        elapsed = time.perf_counter() - started
        profiler.dump_stats(args.profile)
        with app.app_context():
            from helpdesk.extensions import db

            db.engine.dispose()
    print(f"profiled {args.requests} webhooks one at a time: {elapsed:.2f} s under the profiler "
          f"({args.requests / elapsed:.1f}/s); top functions by cumulative time:")
    pstats.Stats(args.profile).sort_stats("cumulative").print_stats(40)


# --- the benchmark ---------------------------------------------------------------------------------------

def print_row(label, kind, floor, ours) -> None:
    print(f"{label:>6}  {kind:<10} {floor['rate']:>9.1f} {floor['p50_ms']:>8.1f} {floor['p99_ms']:>8.1f}  "
          f"{ours['rate']:>9.1f} {ours['p50_ms']:>8.1f} {ours['p99_ms']:>8.1f}  {ours['rate'] / floor['rate']:>5.2f}  "
          f"{ours['drain_s']:>8.2f} {ours['ingest_rate']:>9.1f} {ours['ingest_rate'] / floor['rate']:>5.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "load", "profile"],
                        help="bench (default); load: (internal) the load process; profile: cProfile in-process")
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per side (default 1000)")
    parser.add_argument("--warmup", type=int, default=100, help="requests sent first and not measured")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="floor/ours pairs, each on fresh databases")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=300.0, help="stop firing after this many seconds")
    parser.add_argument("--profile", metavar="FILE", default="twilio-webhook.prof",
                        help="profile mode: where to write the cProfile stats")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server logs, SQLite)")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--account-sid", help=argparse.SUPPRESS)
    parser.add_argument("--auth-token", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == "load":
        load_main(args)
        return

    server_url = os.environ.get("DATABASE_URL") or None
    if server_url and not server_url.startswith(("postgres://", "postgresql")):
        raise SystemExit("DATABASE_URL must name a PostgreSQL server (or be unset for SQLite)")
    kind = "postgresql" if server_url else "sqlite"
    folder = pathlib.Path(tempfile.mkdtemp(prefix="hd-twilio-bench-"))
    try:
        if args.mode == "profile":
            profile_main(args, server_url, folder)
            return
        pairs = []
        print(f"{kind}: {args.requests} signed webhooks per side after {args.warmup} warm-up, concurrency "
              f"{args.concurrency}, gunicorn {' '.join(GUNICORN_SETTINGS)}")
        print(f"{'pair':>6}  {'database':<10} {'floor/s':>9} {'p50 ms':>8} {'p99 ms':>8}  {'ours/s':>9} "
              f"{'p50 ms':>8} {'p99 ms':>8}  {'ratio':>5}  {'drain s':>8} {'stored/s':>9} {'ratio':>5}")
        for pair in range(1, args.repeat + 1):
            floor = measure_floor(server_url, folder, args, pair)
            check("floor", floor, args)
            ours = measure_ours(server_url, folder, args, pair)
            check("ours", ours, args)
            pairs.append((floor, ours))
            print_row(str(pair), kind, floor, ours)
            sys.stdout.flush()
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    ratios = [ours["rate"] / floor["rate"] for floor, ours in pairs]
    median = {side: {key: statistics.median(pair[index][key] for pair in pairs)
                     for key in ("rate", "p50_ms", "p99_ms", "drain_s", "ingest_rate")}
              for index, side in enumerate(("floor", "ours"))}
    print_row("median", kind, median["floor"], median["ours"])
    ratio = statistics.median(ratios)
    print(f"ratio ours/floor (median of pairs): {ratio:.2f}  [pairs: {', '.join(f'{r:.2f}' for r in ratios)}]"
          f"  target >= {TARGET_RATIO:.2f}: {'met' if ratio >= TARGET_RATIO else 'MISSED'}")
    stored = statistics.median(ours["ingest_rate"] / floor["rate"] for floor, ours in pairs)
    print(f"every text stored in its ticket (webhooks answered, then the queue drained): {stored:.2f} of the floor")


if __name__ == "__main__":
    main()
