"""A Twilio API emulator on a loopback port, for tests that drive the real twilio client over HTTP.

    with running_twilio_emulator() as twilio:
        settings = twilio.settings(public_url="http://127.0.0.1:5001")   # TwilioSettings aimed here
        twilio.fail_next(500); twilio.fail_next(400, code=21211)           # the next creates fail so
        twilio.delay_next(2.0)                     # the next create is accepted but answered late
        twilio.created[0].form["Body"]             # what it accepted, in order
        twilio.report_status(sid, "delivered")     # a signed status callback, as Twilio sends one
        twilio.post_webhook(url, {"From": ...})    # a signed inbound webhook
        twilio.add_media(b"...", "image/jpeg")     # -> an https://api.twilio.com/... URL it serves
        twilio.fail_media(url, 500, 429)           # its next downloads answer so, then it is served again

It speaks the 2010-04-01 Messages API (create, fetch, media) with basic auth, records every request,
and signs the requests it makes the way Twilio does.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import http.server
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping

import requests
from twilio.request_validator import RequestValidator

from channels.sms.twilio import TwilioSettings

API = "/2010-04-01/Accounts"
_CREATE = re.compile(rf"^{API}/(?P<account>[^/]+)/Messages\.json$")
_FETCH = re.compile(rf"^{API}/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")
_MEDIA = re.compile(rf"^{API}/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)/Media/(?P<media>[^/.]+)$")


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Sign a webhook as Twilio does: the URL, then each parameter name and value sorted, HMAC-SHA1, base64."""
    pairs = params.items() if isinstance(params, Mapping) else params
    data = url + "".join(name + value for name, value in sorted(pairs))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    #: The form as posted; a repeated name keeps its last value (MediaUrl is never repeated here).
    form: dict[str, str]
    authorized: bool


@dataclasses.dataclass
class EmulatedMessage:
    sid: str
    form: dict[str, str]
    status: str = "queued"
    callbacks: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    def json(self, account_sid: str) -> dict:
        now = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        return {
            "sid": self.sid, "account_sid": account_sid, "status": self.status, "to": self.form.get("To"),
            "from": self.form.get("From"), "messaging_service_sid": self.form.get("MessagingServiceSid"),
            "body": self.form.get("Body"), "num_segments": "1", "num_media": "0", "direction": "outbound-api",
            "api_version": "2010-04-01", "date_created": now, "date_updated": now, "date_sent": None,
            "error_code": None, "error_message": None, "price": None, "price_unit": "USD",
            "uri": f"{API}/{account_sid}/Messages/{self.sid}.json", "subresource_uris": {},
        }


@dataclasses.dataclass(frozen=True)
class _Failure:
    status: int
    code: int
    message: str


class TwilioEmulator:
    host = "127.0.0.1"

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None):
        self.account_sid = account_sid or "AC" + uuid.uuid4().hex
        self.auth_token = auth_token or uuid.uuid4().hex
        self.port: int | None = None
        self.requests: list[RecordedRequest] = []
        self.messages: dict[str, EmulatedMessage] = {}
        #: Statuses reported by callback right after each accepted create, from a thread (as Twilio does).
        self.auto_report: tuple[str, ...] = ()
        self._failures: list[_Failure] = []
        self._delays: list[float] = []
        self._media: dict[str, tuple[bytes, str]] = {}
        self._media_failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Serve on the previous port if there was one (a restart), else on a free one."""
        server = http.server.ThreadingHTTPServer((self.host, self.port or 0), _make_handler(self))
        # Handler threads are joined on close, so no request outlives the emulator.
        server.daemon_threads = False
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="twilio-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None
        self.join_callbacks()

    def join_callbacks(self, timeout: float = 30.0) -> None:
        """Wait for every status callback started so far to finish."""
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.join(timeout=timeout)

    def settings(self, public_url: str, **overrides) -> TwilioSettings:
        """Return TwilioSettings for this emulator's account, with the real client aimed at it."""
        fields = {"account_sid": self.account_sid, "auth_token": self.auth_token, "from_number": "+15005550006",
                  "whatsapp_from": "+14155238886", "public_url": public_url, "api_base_url": self.base_url}
        fields.update(overrides)
        return TwilioSettings(**fields)

    def config(self, public_url: str) -> dict[str, str]:
        """Return the TWILIO_* settings (as config keys or environment variables) for this emulator."""
        return {"TWILIO_ACCOUNT_SID": self.account_sid, "TWILIO_AUTH_TOKEN": self.auth_token,
                "TWILIO_FROM_NUMBER": "+15005550006", "TWILIO_WHATSAPP_FROM": "+14155238886",
                "TWILIO_API_BASE_URL": self.base_url, "HELPDESK_PUBLIC_URL": public_url}

    # --- scripting ------------------------------------------------------------------------------------

    def fail_next(self, status: int, code: int | None = None, message: str | None = None) -> None:
        """Make the next message create fail with this HTTP status and Twilio error code."""
        defaults = {500: (20500, "Internal Server Error"), 429: (20429, "Too Many Requests"),
                    400: (21211, "The 'To' number is not a valid phone number.")}
        default_code, default_message = defaults.get(status, (status, "Error"))
        with self._lock:
            self._failures.append(_Failure(status, code or default_code, message or default_message))

    def delay_next(self, seconds: float) -> None:
        """Accept the next create, but wait this long before answering (a client timing out loses the answer)."""
        with self._lock:
            self._delays.append(seconds)

    def add_media(self, content: bytes, content_type: str) -> str:
        """Serve `content` as a message's media file; return its URL as Twilio gives it (api.twilio.com)."""
        media_sid = new_sid("ME")
        with self._lock:
            self._media[media_sid] = (content, content_type)
        return f"https://api.twilio.com{API}/{self.account_sid}/Messages/{new_sid('MM')}/Media/{media_sid}"

    def fail_media(self, url: str, *statuses: int) -> None:
        """Answer the next downloads of the media at `url` with these HTTP statuses, one each, in order."""
        media_sid = url.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            self._media_failures.setdefault(media_sid, []).extend(statuses)

    def media_downloads(self) -> list[RecordedRequest]:
        """Every media download received, failed ones included."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and _MEDIA.match(r.path)]

    @property
    def created(self) -> list[EmulatedMessage]:
        with self._lock:
            return list(self.messages.values())

    def creates(self) -> list[RecordedRequest]:
        """Every create request received, failed ones included."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and _CREATE.match(r.path)]

    # --- requests it makes, signed ----------------------------------------------------------------------

    def post_webhook(self, url: str, params: Mapping[str, str], signature: str | None = None) -> requests.Response:
        """POST a form to the app as Twilio does, signed with the auth token unless `signature` is given."""
        if signature is None:
            signature = twilio_signature(self.auth_token, url, params)
        return requests.post(url, data=dict(params), headers={"X-Twilio-Signature": signature}, timeout=30)

    def report_status(self, sid: str, status: str, error_code: int | None = None) -> requests.Response:
        """Call the message's status callback with its new status, signed with RequestValidator."""
        with self._lock:
            message = self.messages[sid]
            message.status = status
        params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
                  "AccountSid": self.account_sid, "To": message.form.get("To", ""),
                  "From": message.form.get("From", ""), "ApiVersion": "2010-04-01"}
        if error_code:
            params["ErrorCode"] = str(error_code)
        url = message.form["StatusCallback"]
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        response = requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30)
        with self._lock:
            message.callbacks.append((status, response.status_code))
        return response

    def _report_later(self, sid: str, statuses: tuple[str, ...]) -> None:
        def run():
            for status in statuses:
                self.report_status(sid, status)

        worker = threading.Thread(target=run, name=f"twilio-callbacks-{sid}")
        with self._lock:
            self._workers.append(worker)
        worker.start()

    # --- serving --------------------------------------------------------------------------------------

    def _is_authorized(self, header: str | None) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return hmac.compare_digest((header or "").encode(), expected.encode())

    def handle(self, method: str, path: str, form: dict[str, str], authorization: str | None):
        """Answer one request: (status, content type, body bytes, statuses to report after answering)."""
        authorized = self._is_authorized(authorization)
        with self._lock:
            self.requests.append(RecordedRequest(method, path, form, authorized))
        if not authorized:
            return _error(401, 20003, "Authenticate")
        if method == "POST" and (match := _CREATE.match(path)):
            if match["account"] != self.account_sid:
                return _error(404, 20404, "The requested resource was not found")
            return self._create(form)
        if method == "GET" and (match := _FETCH.match(path)):
            message = self.messages.get(match["sid"])
            if message is None:
                return _error(404, 20404, f"The requested resource {path} was not found")
            return 200, "application/json", json.dumps(message.json(self.account_sid)).encode(), None
        if method == "GET" and (match := _MEDIA.match(path)):
            with self._lock:
                failures = self._media_failures.get(match["media"])
                failure = failures.pop(0) if failures else None
                media = self._media.get(match["media"])
            if match["account"] != self.account_sid:
                return _error(404, 20404, f"The requested resource {path} was not found")
            if failure is not None:
                return _error(failure, {404: 20404, 429: 20429}.get(failure, 20500), f"Injected HTTP {failure}")
            if media is None:
                return _error(404, 20404, f"The requested resource {path} was not found")
            return 200, media[1], media[0], None
        return _error(404, 20404, f"The requested resource {path} was not found")

    def _create(self, form: dict[str, str]):
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            delay = self._delays.pop(0) if self._delays and failure is None else 0.0
        if failure is not None:
            return _error(failure.status, failure.code, failure.message)
        if not form.get("To") or not (form.get("From") or form.get("MessagingServiceSid")):
            return _error(400, 21604, "A 'To' and a 'From' or 'MessagingServiceSid' are required")
        if len(form.get("Body", "")) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit")
        message = EmulatedMessage(new_sid("SM"), form)
        with self._lock:
            self.messages[message.sid] = message
        if delay:
            time.sleep(delay)
        body = json.dumps(message.json(self.account_sid)).encode()
        return 201, "application/json", body, (message.sid, self.auto_report) if self.auto_report else None


def _error(status: int, code: int, message: str):
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    return status, "application/json", json.dumps(body).encode(), None


def _make_handler(emulator: TwilioEmulator):
    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so no idle keep-alive socket outlives a test.
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self._answer("GET", {})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8") if length else ""
            self._answer("POST", dict(urllib.parse.parse_qsl(raw, keep_blank_values=True)))

        def _answer(self, method: str, form: dict[str, str]):
            path = urllib.parse.urlsplit(self.path).path
            status, content_type, body, report = emulator.handle(method, path, form,
                                                                 self.headers.get("Authorization"))
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up waiting (a delayed answer); Twilio still has the message
            if report is not None:
                emulator._report_later(*report)

        def log_message(self, format, *args):
            pass

    return Handler


@contextlib.contextmanager
def running_twilio_emulator(**kwargs):
    emulator = TwilioEmulator(**kwargs)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
