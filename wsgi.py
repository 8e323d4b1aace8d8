"""Production entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`, `celery -A wsgi:celery_app worker`."""

from helpdesk import create_app

app = create_app()
#: The Celery app when REDIS_URL is set (None on the embedded default, where jobs run in-process).
celery_app = app.extensions.get("celery")
