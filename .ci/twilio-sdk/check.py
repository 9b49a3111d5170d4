"""callrelay against Twilio's Python SDK and the Standard Webhooks library, end to end.

Starts the built binary with one account whose events are forwarded to a receiver here. The
receiver verifies every request with `standardwebhooks` and refuses the first few (a target
that is down for a while). Twilio's `RequestValidator` signs a status callback of every
documented event, as POST and as GET, and an Event Streams batch; forgeries must be refused.
Every event must then reach the receiver, verified, under one stable `webhook-id`.

Usage: CALLRELAY_BIN=target/debug/callrelay python .ci/twilio-sdk/check.py
"""

import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "an-auth-token-for-the-sdk-check"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REFUSED_FIRST = 3

EVENTS = {
    "room": ["room-created", "room-ended"],
    "participant": ["participant-connected", "participant-disconnected"],
    "track": ["track-added", "track-removed", "track-enabled", "track-disabled"],
    "recording": ["recording-started", "recording-completed", "recording-failed"],
    "composition": [
        "composition-enqueued", "composition-started", "composition-available",
        "composition-progress", "composition-failed",
    ],
    "composition-hook": ["composition-hook-failed"],
    "media-processor": [
        "media-processor-started", "media-processor-ended", "media-processor-failed",
    ],
    "player-streamer": ["stream-started", "stream-ended", "stream-failed", "player-streamer-failed"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(http.server.BaseHTTPRequestHandler):
    webhook = Webhook(SECRET)
    lock = threading.Lock()
    requests = 0
    verified = {}  # webhook-id -> envelope
    attempts = {}  # webhook-id -> count
    failures = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with Receiver.lock:
            Receiver.requests += 1
            refuse = Receiver.requests <= REFUSED_FIRST
            try:
                envelope = Receiver.webhook.verify(body, headers)
            except Exception as e:  # noqa: BLE001 - any verification failure is a finding
                Receiver.failures.append(f"{headers.get('webhook-id')}: {e}")
                envelope = None
            wid = headers.get("webhook-id")
            Receiver.attempts[wid] = Receiver.attempts.get(wid, 0) + 1
            if envelope is not None and not refuse:
                Receiver.verified[wid] = envelope
        self.send_response(503 if refuse else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


def send(url, data=None, headers=None, method="POST"):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    binary = os.environ.get("CALLRELAY_BIN", "target/debug/callrelay")
    receiver_port, port, admin_port = free_port(), free_port(), free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", receiver_port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    config = f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
public_url = "{base}"
[events]
forward_timeout_ms = 2000
[[accounts]]
sid = "{ACCOUNT}"
auth_token = "{AUTH_TOKEN}"
[[accounts.event_targets]]
name = "sdk-check"
url = "http://127.0.0.1:{receiver_port}/events"
secret = "{SECRET}"
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    relay = subprocess.Popen([binary, "serve", "--config", f.name],
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                if send(f"http://127.0.0.1:{admin_port}/readyz", method="GET")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            sys.exit("callrelay did not become ready")
        validator = RequestValidator(AUTH_TOKEN)
        expected = 0
        url = f"{base}/v1/twilio/status-callbacks"
        for family, names in EVENTS.items():
            for i, name in enumerate(names):
                params = {
                    "AccountSid": ACCOUNT,
                    "StatusCallbackEvent": name,
                    "RoomSid": "RM0123456789abcdef0123456789abcdef",
                    "Timestamp": f"2026-12-07T10:{expected // 60:02}:{expected % 60:02}.000Z",
                    "Note": f"{family} {i} é&=+",
                }
                signature = validator.compute_signature(url, params)
                status, body = send(url, urllib.parse.urlencode(params).encode(),
                                    {"X-Twilio-Signature": signature,
                                     "Content-Type": "application/x-www-form-urlencoded"})
                assert status == 200, (name, status, body)
                assert json.loads(body) == {"accepted": 1, "duplicates": 0}, body
                expected += 1
                # The same event, as GET: signed over the URL with its query string.
                params["Note"] = f"{family} {i} via GET"
                get_url = f"{url}?{urllib.parse.urlencode(params)}"
                status, body = send(get_url, None,
                                    {"X-Twilio-Signature": validator.compute_signature(get_url, {})},
                                    method="GET")
                assert status == 200, (name, "GET", status, body)
                expected += 1
        # Forgeries: a parameter changed after signing, another token.
        params = {"AccountSid": ACCOUNT, "StatusCallbackEvent": "room-ended"}
        signature = validator.compute_signature(url, params)
        params["StatusCallbackEvent"] = "room-created"
        assert send(url, urllib.parse.urlencode(params).encode(),
                    {"X-Twilio-Signature": signature})[0] == 403
        other = RequestValidator("another-token").compute_signature(url, params)
        assert send(url, urllib.parse.urlencode(params).encode(),
                    {"X-Twilio-Signature": other})[0] == 403

        # Event Streams: a batch signed as Twilio's libraries validate it.
        batch = json.dumps([{
            "specversion": "1.0",
            "type": "com.twilio.voice.insights.call-summary.complete",
            "source": "/v1/Voice/CA0123456789abcdef0123456789abcdef/Summary",
            "id": "EZ0123456789abcdef0123456789abcdef",
            "time": "2026-12-07T10:05:00.000Z",
            "data": json.dumps({"call_sid": "CA0123456789abcdef0123456789abcdef",
                                "account_sid": ACCOUNT}),
        }])
        sink = f"{base}/v1/twilio/event-streams?bodySHA256={hashlib.sha256(batch.encode()).hexdigest()}"
        signature = validator.compute_signature(sink, {})
        assert validator.validate(sink, batch, signature), "the SDK accepts its own signature"
        status, body = send(sink, batch.encode(), {"X-Twilio-Signature": signature,
                                                   "Content-Type": "application/json"})
        assert status == 200, (status, body)
        expected += 1
        assert send(sink, batch.replace("complete", "partial").encode(),
                    {"X-Twilio-Signature": signature})[0] == 403

        deadline = time.time() + 60
        while time.time() < deadline:
            with Receiver.lock:
                if len(Receiver.verified) >= expected:
                    break
            time.sleep(0.1)
        with Receiver.lock:
            assert not Receiver.failures, Receiver.failures
            assert len(Receiver.verified) == expected, (len(Receiver.verified), expected)
            retried = [w for w, n in Receiver.attempts.items() if n > 1]
            assert retried, "the refused deliveries were retried under the same webhook-id"
            types = [e["type"] for e in Receiver.verified.values()]
        print(f"twilio-sdk check: {expected} events signed by twilio {__import__('twilio').__version__}, "
              f"all forwarded and verified by standardwebhooks; {len(retried)} retried after 503")
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=20)
        except subprocess.TimeoutExpired:
            relay.kill()
        server.shutdown()
    assert "com.twilio.voice.insights.call-summary.complete" in types


if __name__ == "__main__":
    main()
