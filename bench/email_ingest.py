"""How fast the IMAP poller ingests a full mailbox, next to a floor measured in the same run.

    .venv/bin/python bench/email_ingest.py                      # SQLite, 1000 messages, 3 repetitions
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/email_ingest.py

The script starts its own Dovecot (tests/fakes/dovecot.py), fills a fresh mailbox by IMAP APPEND with
generated mail (the mix of tests/integration/test_imap_chaos.py) and, for each repetition, on a fresh
database:

* floor: a process that fetches every body with IMAPClient (BODY.PEEK[], so nothing is flagged), parses it
  with email.message_from_bytes(policy=policy.default) and commits one row per message into a trivial table;
* ours: `flask --app wsgi helpdesk fetch-mail --once`, which drains the mailbox (tickets, customers,
  threading, triage, acknowledgements, \\Seen flags, cursor and lease) and, before it exits, delivers the
  acknowledgements it queued (written as .eml files: no SMTP server is configured).

Both are timed the same way, as whole processes (start-up included), wall clock. Each repetition then also
times a long-running poller (`steady`): on a fresh copy of the mailbox and a fresh database, a process that
has created the app, started its email parser process and loaded the language models (as a `fetch-mail`
worker has, long before mail comes)
times `drain_mailboxes()` until every message is committed and flagged, next to the floor's own time from its
IMAP connect to its last commit (its interpreter start-up left out too). The acknowledgements that drain
queued are delivered after it, by a job of their own as in a worker; their time is reported apart.

With DATABASE_URL set to a PostgreSQL server, each repetition creates a throwaway database there and drops it
afterwards; without it, a temporary SQLite file is used. The ratio ours/floor (rates) is what to compare
across machines and runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import email
import os
import pathlib
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from email import policy

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.databases import libpq_url, throwaway_database

TARGET_RATIO = 0.5


# --- the floor, run as its own process --------------------------------------------------------------------

def floor(imap_host: str, imap_port: int, user: str, password: str, database_url: str) -> tuple[int, float]:
    """Fetch, parse and insert every message of INBOX, one commit each; return how many, and the seconds
    from the database connect to the last commit."""
    from imapclient import IMAPClient

    started = time.perf_counter()
    connection, placeholder = _dbapi_connect(database_url)
    cursor = connection.cursor()
    cursor.execute("CREATE TABLE IF NOT EXISTS floor_message (id INTEGER PRIMARY KEY, message_id TEXT, "
                   "subject TEXT, raw_size INTEGER)" if placeholder == "?" else
                   "CREATE TABLE IF NOT EXISTS floor_message (id SERIAL PRIMARY KEY, message_id TEXT, "
                   "subject TEXT, raw_size INTEGER)")
    connection.commit()
    insert = f"INSERT INTO floor_message (message_id, subject, raw_size) VALUES ({placeholder}, " \
             f"{placeholder}, {placeholder})"
    count = 0
    with IMAPClient(imap_host, imap_port, ssl=False, timeout=30) as client:
        client.login(user, password)
        client.select_folder("INBOX", readonly=True)
        uids = sorted(client.search("ALL"))
        for start in range(0, len(uids), 100):
            fetched = client.fetch(uids[start:start + 100], ["BODY.PEEK[]"])
            for uid in uids[start:start + 100]:
                raw = fetched[uid][b"BODY[]"]
                message = email.message_from_bytes(raw, policy=policy.default)
                cursor.execute(insert, (str(message["Message-ID"]), str(message["Subject"]), len(raw)))
                connection.commit()
                count += 1
    connection.close()
    return count, time.perf_counter() - started


def steady() -> tuple[int, float, float]:
    """In a process whose app is up and models loaded, drain the HELPDESK_IMAP_URL mailbox; return how many
    were stored, the seconds the drain took, and the seconds the delivery of its acknowledgements took after."""
    import threading

    from helpdesk import create_app
    from helpdesk.email_intake import languages_to_detect
    from helpdesk.email_parsing import start_parser_processes
    from helpdesk.mailboxes import drain_mailboxes
    from helpdesk.triage.engine import configured_languages
    from helpdesk.triage.language import detect_language

    app = create_app()
    with app.app_context():
        detect_language("Hello, I cannot log in since yesterday.", configured_languages())  # loads the models
        start_parser_processes(app.config["HELPDESK_EMAIL_PARSER_PROCESSES"], languages_to_detect())  # and theirs
        started = time.perf_counter()
        outcomes = drain_mailboxes()
        drained = time.perf_counter() - started
    for thread in threading.enumerate():
        if thread.name.startswith("job-"):
            thread.join()
    delivered = time.perf_counter() - started - drained
    return sum(outcome.stored for outcome in outcomes), drained, delivered


def _dbapi_connect(database_url: str):
    if database_url.startswith("sqlite:///"):
        import sqlite3

        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        connection.execute("PRAGMA journal_mode=WAL")  # as the app sets it
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection, "?"
    import psycopg

    return psycopg.connect(libpq_url(database_url)), "%s"


def app_env(database_url: str, instance: pathlib.Path, imap_url: str | None = None,
            per_run: int | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update({"DATABASE_URL": database_url, "HELPDESK_INSTANCE_PATH": str(instance),
                "SECRET_KEY": "bench-secret-key-not-for-production"})
    env.pop("HELPDESK_IMAP_URL", None)
    if imap_url:
        env["HELPDESK_IMAP_URL"] = imap_url
    if per_run:
        env["HELPDESK_IMAP_MESSAGES_PER_RUN"] = str(per_run)
    return env


def flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "wsgi", *args]


def timed(command: list[str], env: dict[str, str], log: pathlib.Path) -> float:
    with open(log, "ab") as output:
        started = time.perf_counter()
        completed = subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} … exited with {completed.returncode}; see {log}")
    return elapsed


# --- the benchmark ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages in the mailbox (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="floor/ours pairs, each on a fresh database")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-run", type=int, default=None,
                        help="HELPDESK_IMAP_MESSAGES_PER_RUN for our poller (default: the app's, 200)")
    parser.add_argument("--profile", metavar="FILE", help="also cProfile one extra run of ours into FILE and "
                                                         "print its top functions")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, SQLite files)")
    sub = parser.add_subparsers(dest="mode")
    floor_parser = sub.add_parser("floor", help="(internal) run the floor once; print how many, and its seconds")
    for name in ("host", "port", "user", "password", "database_url"):
        floor_parser.add_argument(name)
    sub.add_parser("steady", help="(internal) drain HELPDESK_IMAP_URL in a warm process; print how many, seconds")
    args = parser.parse_args(argv)

    if args.mode == "floor":
        print(*floor(args.host, int(args.port), args.user, args.password, args.database_url))
        return
    if args.mode == "steady":
        print(*steady())
        return

    from tests.fakes.dovecot import Dovecot, dovecot_binary
    from tests.integration.test_imap_chaos import append_all, generate_mail, imap_url

    binary = dovecot_binary()
    if binary is None:
        raise SystemExit("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
    server_url = os.environ.get("DATABASE_URL") or None
    if server_url and not server_url.startswith(("postgres://", "postgresql")):
        raise SystemExit("DATABASE_URL must name a PostgreSQL server (or be unset for SQLite)")
    kind = "postgresql" if server_url else "sqlite"
    folder = pathlib.Path(tempfile.mkdtemp(prefix="hd-bench-"))
    server = Dovecot(binary, folder)
    mail = generate_mail(args.messages, seed=args.seed, tag="bench")
    megabytes = sum(map(len, mail)) / 1e6
    rows, steady_rows = [], []
    acknowledgements, deliveries = [], []
    try:
        server.start()
        for repetition in range(1, args.repeat + 1):
            pair = one_pair(server, mail, server_url, folder, repetition, args.per_run, append_all, imap_url)
            rows.append((pair.floor_seconds, pair.ours_seconds))
            steady_rows.append((pair.floor_inner_seconds, pair.steady_seconds))
            acknowledgements.append(pair.delivered)
            deliveries.append(pair.delivery_seconds)
            print_row(kind, args.messages, *rows[-1], label=str(repetition))
            print_row(kind, args.messages, *steady_rows[-1], label=f"{repetition} steady")
        startup = measure_startup(server_url, folder)
        if args.profile:
            profile_ours(server, mail, server_url, folder, args.per_run, args.profile, append_all, imap_url)
    finally:
        server.stop()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    print()
    print(f"{kind}: {args.messages} messages ({megabytes:.1f} MB), {args.repeat} pairs, "
          f"app start-up (fetch-mail with no mailbox) {startup:.2f} s, "
          f"acknowledgements delivered by ours per run: {', '.join(map(str, acknowledgements))}, "
          f"their delivery after a steady drain: {statistics.median(deliveries):.2f} s (median)")
    print_header()
    for label, pairs in (("whole processes", rows), ("steady (long-running poller)", steady_rows)):
        print_row(kind, args.messages, statistics.median(row[0] for row in pairs),
                  statistics.median(row[1] for row in pairs), label="median")
        ratios = [floor_s / ours_s for floor_s, ours_s in pairs]
        ratio = statistics.median(ratios)
        print(f"  {label}: ratio ours/floor (median of pairs) {ratio:.2f}  "
              f"[pairs: {', '.join(f'{r:.2f}' for r in ratios)}]  "
              f"target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'MISSED'}")


@dataclasses.dataclass(frozen=True)
class Pair:
    floor_seconds: float
    #: The floor's own time, from its database connect to its last commit.
    floor_inner_seconds: float
    ours_seconds: float
    delivered: int
    steady_seconds: float
    delivery_seconds: float


def one_pair(server, mail, server_url, folder, repetition, per_run, append_all, imap_url):
    account = server.new_account()
    append_all(account, mail)
    with throwaway_database(server_url, folder) as database_url:
        floor_seconds = timed(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "floor", server.host, str(server.port),
             account.user, account.password, database_url],
            {**os.environ}, folder / f"floor-{repetition}.log")
        counted, floor_inner = (folder / f"floor-{repetition}.log").read_text().split()[-2:]
        assert int(counted) == len(mail), f"the floor saw {counted} messages, not {len(mail)}"
    with throwaway_database(server_url, folder) as database_url:
        instance = folder / f"instance-{repetition}"
        env = app_env(database_url, instance)
        timed(flask("db", "upgrade"), env, folder / f"upgrade-{repetition}.log")
        env = app_env(database_url, instance, imap_url(account), per_run)
        log = folder / f"ours-{repetition}.log"
        ours_seconds = timed(flask("helpdesk", "fetch-mail", "--once"), env, log)
        output = log.read_text(errors="replace")
        assert f"{len(mail)} new messages ingested" in output, output[-3000:]
        with account.client() as client:
            client.select_folder("INBOX", readonly=True)
            assert client.search(["UNSEEN"]) == [], "our poller left messages unseen"
    delivered = len(list((instance / "outgoing").glob("*.eml")))
    steady_seconds, delivery_seconds = one_steady_run(server, mail, server_url, folder, repetition, per_run,
                                                      append_all, imap_url)
    return Pair(floor_seconds, float(floor_inner), ours_seconds, delivered, steady_seconds, delivery_seconds)


def one_steady_run(server, mail, server_url, folder, repetition, per_run, append_all, imap_url):
    account = server.new_account()
    append_all(account, mail)
    with throwaway_database(server_url, folder) as database_url:
        instance = folder / f"instance-steady-{repetition}"
        timed(flask("db", "upgrade"), app_env(database_url, instance), folder / f"upgrade-steady-{repetition}.log")
        log = folder / f"steady-{repetition}.log"
        timed([sys.executable, str(pathlib.Path(__file__).resolve()), "steady"],
              app_env(database_url, instance, imap_url(account), per_run), log)
        stored, drained, delivered = log.read_text().split()[-3:]
        assert int(stored) == len(mail), f"the steady run stored {stored} messages, not {len(mail)}"
        with account.client() as client:
            client.select_folder("INBOX", readonly=True)
            assert client.search(["UNSEEN"]) == [], "our poller left messages unseen"
    return float(drained), float(delivered)


def measure_startup(server_url, folder) -> float:
    with throwaway_database(server_url, folder) as database_url:
        env = app_env(database_url, folder / "instance-startup")
        timed(flask("db", "upgrade"), env, folder / "upgrade-startup.log")
        return min(timed(flask("helpdesk", "fetch-mail", "--once"), env, folder / "startup.log")
                   for _ in range(3))


def profile_ours(server, mail, server_url, folder, per_run, path, append_all, imap_url) -> None:
    account = server.new_account()
    append_all(account, mail)
    with throwaway_database(server_url, folder) as database_url:
        instance = folder / "instance-profile"
        timed(flask("db", "upgrade"), app_env(database_url, instance), folder / "upgrade-profile.log")
        env = app_env(database_url, instance, imap_url(account), per_run)
        command = [sys.executable, "-m", "cProfile", "-o", str(pathlib.Path(path).resolve()), "-m", "flask",
                   "--app", "wsgi", "helpdesk", "fetch-mail", "--once"]
        seconds = timed(command, env, folder / "profile.log")
    print(f"\nprofiled run (slower under the profiler): {seconds:.2f} s; top functions by cumulative time:")
    pstats.Stats(path).sort_stats("cumulative").print_stats(30)


def print_header() -> None:
    print(f"{'run':>9}  {'database':<10} {'messages':>8}  {'floor s':>8} {'floor/s':>8}  {'ours s':>8} "
          f"{'ours/s':>8}  {'ratio':>5}")


def print_row(kind, messages, floor_seconds, ours_seconds, label) -> None:
    if label == "1":
        print_header()
    print(f"{label:>9}  {kind:<10} {messages:>8}  {floor_seconds:>8.2f} {messages / floor_seconds:>8.1f}  "
          f"{ours_seconds:>8.2f} {messages / ours_seconds:>8.1f}  {floor_seconds / ours_seconds:>5.2f}")


if __name__ == "__main__":
    main()
