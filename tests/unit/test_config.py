import stat

from helpdesk.config import build_config


def test_embedded_defaults_need_no_other_server(tmp_path):
    config = build_config(tmp_path, environ={})
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'helpdesk.sqlite3'}"
    assert config["REDIS_URL"] is None
    assert config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert config["HELPDESK_IMAP_URL"] is None and config["HELPDESK_SMTP_URL"] is None


def test_a_missing_secret_key_is_generated_once_and_kept_private(tmp_path):
    first = build_config(tmp_path, environ={})["SECRET_KEY"]
    second = build_config(tmp_path, environ={})["SECRET_KEY"]
    assert first == second and len(first) >= 48
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_environment_variables_override_the_defaults(tmp_path):
    config = build_config(tmp_path, environ={
        "SECRET_KEY": "from-env",
        "DATABASE_URL": "postgres://user@db.internal/helpdesk",
        "REDIS_URL": "redis://cache:6379/0",
        "HELPDESK_PUBLIC_URL": "https://help.example.com/",
    })
    assert config["SECRET_KEY"] == "from-env"
    assert not (tmp_path / "secret_key").exists()
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://user@db.internal/helpdesk"
    assert config["RATELIMIT_STORAGE_URI"] == "redis://cache:6379/0"
    assert config["HELPDESK_PUBLIC_URL"] == "https://help.example.com"
    # Behind HTTPS the session cookies are only ever sent over HTTPS.
    assert config["SESSION_COOKIE_SECURE"] is True and config["REMEMBER_COOKIE_SECURE"] is True
