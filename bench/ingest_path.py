"""The shared ingest path in one process: ingest() per message next to one committed INSERT per message.

    .venv/bin/python bench/ingest_path.py                        # SQLite file, 1000 messages, 3 rounds
    .venv/bin/python bench/ingest_path.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/ingest_path.py --profile ingest.prof  # one more round under cProfile

Every channel's benchmark (email, webhooks, chat) spends most of its time here, so this measures it alone:
no network, no web server, no parsing. Each round, on a fresh database with the migrations applied, a
default SLA policy and two triage rules:

* floor: the same messages, each committed as one row of a trivial table through the same engine;
* ours: `ingest()` of each message: texts from 300 phone numbers (a new ticket on each number's first text,
  then that open ticket) and emails (a new ticket each, or a reply by In-Reply-To to an earlier one).

The first 50 messages of each side are a warm-up (language models, caches) and are not timed. Reported:
milliseconds per message for both and ours/floor; the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time
import uuid

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.databases import throwaway_database

WARMUP = 50

WORDS = ("order invoice refund password account delivery broken screen help please thanks urgent login "
         "payment card shipping address changed cannot open app error again today tomorrow").split()


def generated_messages(count: int, seed: int):
    from channels.messages import ChannelName, IdentityKind, InboundMessage, SenderIdentity, ThreadHints

    rng = random.Random(seed)
    phones = [f"+4670{rng.randrange(1000000, 9999999)}" for _ in range(300)]
    sent_email_ids: list[str] = []
    messages = []
    for index in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 40))).capitalize() + "."
        if rng.random() < 0.6:
            phone = rng.choice(phones)
            messages.append(InboundMessage(
                channel=ChannelName.SMS, sender=SenderIdentity(IdentityKind.PHONE, phone),
                dedupe_key=f"twilio:SM{uuid.UUID(int=rng.getrandbits(128)).hex}", external_id=f"SM{index}",
                text=text, thread=ThreadHints(join_open_ticket_on_channel=True)))
            continue
        message_id = f"<{index}.{seed}@customer.example>"
        replies_to = (rng.choice(sent_email_ids),) if sent_email_ids and rng.random() < 0.4 else ()
        address = f"customer{rng.randrange(400)}@example.org"
        messages.append(InboundMessage(
            channel=ChannelName.EMAIL, sender=SenderIdentity(IdentityKind.EMAIL, address, "A Customer"),
            dedupe_key=f"email:{message_id}", external_id=message_id,
            subject=("Re: " if replies_to else "") + text[:40], text=text, reply_text=text,
            thread=ThreadHints(reply_to_external_ids=replies_to)))
        sent_email_ids.append(message_id)
    return messages


def configure(database_url: str, instance: pathlib.Path):
    os.environ.update({"DATABASE_URL": database_url, "SECRET_KEY": "bench-secret-key-not-for-production",
                       "HELPDESK_INSTANCE_PATH": str(instance)})
    os.environ.pop("REDIS_URL", None)
    from flask_migrate import upgrade

    from helpdesk import create_app

    app = create_app()
    with app.app_context():
        upgrade()
        _seed_triage()
    return app


def _seed_triage() -> None:
    from helpdesk.triage.config_io import import_policies, import_rules

    import_policies("""
policies:
  - name: Standard
    default: true
    calendar:
      name: Stockholm office
      timezone: Europe/Stockholm
      hours: {mon: [["08:00", "17:00"]], tue: [["08:00", "17:00"]], wed: [["08:00", "17:00"]],
              thu: [["08:00", "17:00"]], fri: [["08:00", "16:00"]]}
      holidays: {country: SE}
    targets:
      normal: {first_response: 240, next_response: 480, resolution: 2880}
      high: {first_response: 60, resolution: 960}
      urgent: {first_response: 30, resolution: 480}
      low: {first_response: 480, resolution: 5760}
""")
    import_rules("""
rules:
  - name: urgent words
    conditions: {body_regex: "(?i)urgent"}
    actions: {priority: high}
  - name: payments to second line
    conditions: {body_regex: "(?i)payment|refund"}
    actions: {tier: second_line}
    run_on: create_and_customer_message
""")


def run_floor(app, messages) -> float:
    import sqlalchemy as sa

    from helpdesk.extensions import db

    with app.app_context():
        with db.engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE floor_text (id INTEGER PRIMARY KEY, dedupe_key TEXT, body TEXT)"
                                       if db.engine.dialect.name == "sqlite" else
                                       "CREATE TABLE floor_text (id SERIAL PRIMARY KEY, dedupe_key TEXT, body TEXT)")
        insert = sa.text("INSERT INTO floor_text (dedupe_key, body) VALUES (:key, :body)")

        def store(message):
            with db.engine.begin() as connection:
                connection.execute(insert, {"key": message.dedupe_key, "body": message.text})

        for message in messages[:WARMUP]:
            store(message)
        started = time.perf_counter()
        for message in messages[WARMUP:]:
            store(message)
        return time.perf_counter() - started


def run_ours(app, messages, profiler=None) -> float:
    from helpdesk.ingest import ingest

    with app.app_context():
        for message in messages[:WARMUP]:
            ingest(message)
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        for message in messages[WARMUP:]:
            ingest(message)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
        from helpdesk.extensions import db
        from helpdesk.models import Message

        stored = db.session.query(Message).count()
        db.session.rollback()
        if stored != len(messages):
            raise SystemExit(f"stored {stored} messages of {len(messages)}")
        return elapsed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="a PostgreSQL server URL; each round uses a throwaway database")
    parser.add_argument("--profile", metavar="FILE", help="one more round of ours under cProfile")
    args = parser.parse_args(argv)
    messages = generated_messages(args.messages + WARMUP, args.seed)
    timed = args.messages
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as folder_name:
        folder = pathlib.Path(folder_name)
        ratios = []
        print(f"{'round':>5}  {'database':<10} {'floor ms':>9} {'ours ms':>9}  ratio   (per message, {timed} timed)")
        for round_number in range(1, args.rounds + 1):
            with throwaway_database(args.database_url, folder) as database_url:
                app = configure(database_url, folder / f"instance-{round_number}")
                floor_s = run_floor(app, messages)
                ours_s = run_ours(app, messages)
                with app.app_context():
                    from helpdesk.extensions import db

                    kind = db.engine.dialect.name
                    db.engine.dispose()
            ratio = floor_s / ours_s
            ratios.append(ratio)
            print(f"{round_number:>5}  {kind:<10} {floor_s / timed * 1000:>9.2f} {ours_s / timed * 1000:>9.2f}"
                  f"  {ratio:>5.2f}")
        print(f"ours/floor (rate ratio, median of rounds): {statistics.median(ratios):.2f}")
        if args.profile:
            import cProfile
            import pstats

            with throwaway_database(args.database_url, folder) as database_url:
                app = configure(database_url, folder / "instance-profile")
                profiler = cProfile.Profile()
                run_ours(app, messages, profiler)
                with app.app_context():
                    from helpdesk.extensions import db

                    db.engine.dispose()
            profiler.dump_stats(args.profile)
            pstats.Stats(args.profile).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    main()
