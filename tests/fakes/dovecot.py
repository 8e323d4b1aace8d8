"""A real Dovecot IMAP server for tests: its own configuration, port and mail folder in a temporary directory.

    with running_dovecot() as server:      # skips the test when Dovecot is not installed
        account = server.new_account()     # a fresh, empty mailbox, so tests can share one server
        account.append(raw_bytes)          # -> the new message's UID
        server.stop(); server.start()      # the same mailboxes on the same port again
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
from imapclient import IMAPClient

from tests.servers import free_port

USER = "support@example.com"
#: Any user name logs in with this password, so every test can have a mailbox of its own.
PASSWORD = "secret"
#: Dovecot refuses this account every time, at once: a wrong password would instead slow every later login
#: from 127.0.0.1 by seconds (Dovecot's auth penalty).
LOCKED_USER = "locked@example.com"
LOCKED_REASON = "Mailbox_locked_by_the_test"
#: An account whose name and password need URL-encoding.
AWKWARD_USER = "help.desk@example.com"
AWKWARD_PASSWORD = "p@ss w/rd%"

_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = {instance}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
{unprivileged}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
# Users not in the file log in with the shared password. (Adding lines to the file instead is unreliable:
# Dovecot notices a change by its mtime, in whole seconds.)
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""

# Without root, every Dovecot process runs as the current user.
_UNPRIVILEGED = """\
default_login_user = {user}
default_internal_user = {user}
default_internal_group = {group}
service auth-worker {{
  user = $default_internal_user
}}
"""


def _group_is_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


class Dovecot:
    host = "127.0.0.1"

    def __init__(self, binary: str, root: pathlib.Path):
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.config_path = root / "dovecot.conf"
        self._process: subprocess.Popen | None = None
        self._output = None
        self._write_config()

    def _write_config(self) -> None:
        mail = self.root / "mail"
        mail.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            # The master runs as root and hands each mailbox to the `mail` user.
            owner, group, unprivileged = "mail", "mail", ""
            self.root.chmod(0o755)
            shutil.chown(mail, "mail", "mail")
        else:
            owner, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
            unprivileged = _UNPRIVILEGED.format(user=owner, group=group)
        self.config_path.write_text(_CONFIG.format(
            root=self.root, instance=f"helpdesk-test-{uuid.uuid4().hex[:8]}", port=self.port,
            uid=owner, gid=group, unprivileged=unprivileged, password=PASSWORD))
        (self.root / "users").write_text(
            f"{AWKWARD_USER}:{{PLAIN}}{AWKWARD_PASSWORD}\n"
            f"{LOCKED_USER}:{{PLAIN}}{PASSWORD}::::::nologin=y reason={LOCKED_REASON}\n")

    def account(self, user: str) -> DovecotAccount:
        return DovecotAccount(self, user, AWKWARD_PASSWORD if user == AWKWARD_USER else PASSWORD)

    def new_account(self) -> DovecotAccount:
        """Return an account whose mailbox nobody has used yet."""
        return self.account(f"support-{uuid.uuid4().hex[:10]}@example.com")

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start the server in the foreground of a child process and wait until it accepts connections."""
        assert not self.is_running, "already running"
        self._output = open(self.root / "dovecot.out", "ab")
        # A session of its own, so stop() can reach every Dovecot process: the imap processes serving
        # connections outlive the master otherwise, and a "stopped" server would go on answering.
        command = [self.binary, "-c", str(self.config_path), "-F"]
        self._process = subprocess.Popen(command, stdout=self._output, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._close_output()
                raise RuntimeError(f"dovecot exited with {self._process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"dovecot did not listen on {self.port} within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Shut the server down (its connections drop) and wait until it is gone."""
        if self._process is None:
            return
        group = self._process.pid  # the session leader's pid is the process group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        deadline = time.monotonic() + 5
        while _group_is_alive(group):
            if time.monotonic() > deadline:
                os.killpg(group, signal.SIGKILL)
                break
            time.sleep(0.02)
        self._process = None
        self._close_output()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def log(self) -> str:
        parts = []
        for name in ("dovecot.out", "dovecot.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    @contextlib.contextmanager
    def client(self, user: str = USER):
        """A logged-in IMAPClient, logged out afterwards."""
        with IMAPClient(self.host, self.port, ssl=False, timeout=10) as client:
            client.login(user, self.account(user).password)
            yield client

    def append(self, raw: bytes, folder: str = "INBOX", user: str = USER) -> int:
        """Store `raw` in `folder` the way a mail client would (IMAP APPEND); return its UID."""
        with self.client(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            reply = client.append(folder, raw)
        return int(re.search(rb"APPENDUID \d+ (\d+)", reply).group(1))

    def flags(self, folder: str = "INBOX", user: str = USER) -> dict[int, tuple[bytes, ...]]:
        """Return every message's flags by UID (read-only, so \\Recent and \\Seen stay as they are)."""
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            return {uid: tuple(flag for flag in flags if flag != b"\\Recent")
                    for uid, flags in client.get_flags(client.search("ALL")).items()}

    def seen_uids(self, folder: str = "INBOX", user: str = USER) -> list[int]:
        return sorted(uid for uid, flags in self.flags(folder, user).items() if b"\\Seen" in flags)

    def uid_validity(self, folder: str = "INBOX", user: str = USER) -> int:
        with self.client(user) as client:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def recreate_folder(self, folder: str, user: str = USER) -> int:
        """Delete and create `folder` again, as when a backup is restored; return its new UIDVALIDITY."""
        if folder.upper() == "INBOX":
            raise ValueError("IMAP cannot delete INBOX; recreate another folder")
        with self.client(user) as client:
            if client.folder_exists(folder):
                client.delete_folder(folder)
            client.create_folder(folder)
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])


@dataclasses.dataclass(frozen=True)
class DovecotAccount:
    """One user's mailbox on the server, with the server's helpers bound to that user."""

    server: Dovecot
    user: str
    password: str

    def client(self):
        return self.server.client(self.user)

    def append(self, raw: bytes, folder: str = "INBOX") -> int:
        return self.server.append(raw, folder, self.user)

    def flags(self, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        return self.server.flags(folder, self.user)

    def seen_uids(self, folder: str = "INBOX") -> list[int]:
        return self.server.seen_uids(folder, self.user)

    def uid_validity(self, folder: str = "INBOX") -> int:
        return self.server.uid_validity(folder, self.user)

    def recreate_folder(self, folder: str) -> int:
        return self.server.recreate_folder(folder, self.user)


@contextlib.contextmanager
def running_dovecot():
    """Run a fresh Dovecot for the duration of the block; skip the test when Dovecot is missing."""
    binary = dovecot_binary()
    if binary is None:
        pytest.skip("dovecot is not installed (Debian: apt-get install dovecot-imapd); IMAP tests need it")
    # A short path: Dovecot's unix sockets live under it, and socket paths are limited to about 100 bytes.
    root = pathlib.Path(tempfile.mkdtemp(prefix="hd-dovecot-"))
    server = Dovecot(binary, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
