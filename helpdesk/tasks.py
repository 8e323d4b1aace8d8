"""Running jobs: as Celery tasks when Redis is configured, otherwise inside this process."""

from __future__ import annotations

import logging
import pathlib
import threading
import time

from celery import Celery, Task
from flask import Flask, current_app

from helpdesk.extensions import socketio
from helpdesk.jobs import JOBS, PERIODIC

log = logging.getLogger(__name__)


def init_jobs(app: Flask) -> None:
    """Pick the job runner for this configuration: "inline" (tests), "thread" or "celery"."""
    mode = app.config.get("HELPDESK_JOBS_MODE") or ("celery" if app.config.get("REDIS_URL") else "thread")
    app.config["HELPDESK_JOBS_MODE"] = mode
    if mode == "celery":
        app.extensions["celery"] = make_celery(app)


def make_celery(app: Flask) -> Celery:
    """Build the Celery app: Redis broker, one task per job, beat schedule for the periodic ones."""

    class AppContextTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, task_cls=AppContextTask)
    celery.conf.update(
        broker_url=app.config["REDIS_URL"],
        result_backend=app.config["REDIS_URL"],
        task_ignore_result=False,
        # A job is acknowledged after it ran, so a worker crash hands it to another worker.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Beat keeps its last-run times here rather than in whatever directory it was started from.
        beat_schedule_filename=str(pathlib.Path(app.instance_path) / "celerybeat-schedule"),
        beat_schedule={
            f"periodic-{name}": {"task": f"helpdesk.{name}", "schedule": interval}
            for name, interval in PERIODIC.items()
        },
    )
    for name, function in JOBS.items():
        celery.task(name=f"helpdesk.{name}")(function)
    return celery


def enqueue(name: str) -> None:
    """Run job `name` soon, wherever jobs run in this configuration."""
    if name not in JOBS:
        raise KeyError(f"unknown job {name!r}")
    mode = current_app.config["HELPDESK_JOBS_MODE"]
    if mode == "celery":
        current_app.extensions["celery"].send_task(f"helpdesk.{name}")
    elif mode == "inline":
        JOBS[name]()
    else:
        _run_in_thread(current_app._get_current_object(), name)


def _run_in_thread(app: Flask, name: str) -> None:
    """Run job `name` in a thread of this process, or, if one is running it, have that thread run it again.

    Every run handles all the work that is due, so calls that come while a run goes on (a webhook each) need
    one more run after it, not a thread each.
    """
    runs, lock = app.extensions.setdefault("helpdesk.job_threads", ({}, threading.Lock()))
    with lock:
        if name in runs:
            runs[name] = True  # ask the running thread for one more run
            return
        runs[name] = False
    # Not a daemon thread: a process that exits (`fetch-mail --once`, a stopping server) first finishes the
    # job it started, rather than cutting a delivery off between sending and recording it.
    threading.Thread(target=_run_until_settled, args=(app, name, runs, lock), name=f"job-{name}").start()


def _run_until_settled(app: Flask, name: str, runs: dict[str, bool], lock: threading.Lock) -> None:
    while True:
        _run_in_context(app, name)  # logs a failing run rather than raising
        with lock:
            if not runs[name]:
                del runs[name]
                return
            runs[name] = False


def _run_in_context(app: Flask, name: str) -> None:
    with app.app_context():
        try:
            JOBS[name]()
        except Exception:  # a failing job is logged and retried at its next run, never fatal
            log.exception("job %s failed", name)


class InProcessScheduler:
    """Runs the periodic jobs on their intervals inside this process (the embedded default)."""

    def __init__(self, app: Flask):
        self.app = app
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def run_forever(self) -> None:
        next_run = {name: 0.0 for name in PERIODIC}
        while not self._stop.is_set():
            now = time.monotonic()
            for name, interval in PERIODIC.items():
                if now >= next_run[name]:
                    next_run[name] = now + interval
                    # One job at a time per process; jobs are short and idempotent.
                    with self._lock:
                        _run_in_context(self.app, name)
            socketio.sleep(1.0)

    def start(self) -> None:
        socketio.start_background_task(self.run_forever)

    def stop(self) -> None:
        self._stop.set()
