#!/usr/bin/env python3
"""A webhook receiver for tests/alerts/dispatcher.sh (Python 3 standard library only).

  receiver.py serve LOG PORT_FILE [PORT]   listen on 127.0.0.1 (PORT, or a free one, written
                                           to PORT_FILE once listening); append every request
                                           as one JSON line to LOG
  receiver.py control PORT MODE...         switch the running receiver's mode

Modes: "ok" (answer 200), "fail500 N" (answer 500 to the next N requests, then 200), "slow S"
(sleep S seconds, then answer 200). A log line: {"id": Pg-Quota-Alert-Id, "signature":
Pg-Quota-Signature, "content_type", "body": the body as text, "received_at": unix time,
"status": the status answered, "delay": seconds slept first}; it is written when the request
arrives, before any sleep, so a test sees what is in flight.
"""
import json
import os
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTROL_PATH = "/_control"


class State:
    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.log_path = log_path
        self.failures_left = 0
        self.delay = 0.0

    def set_mode(self, words):
        with self.lock:
            if words == ["ok"]:
                self.failures_left, self.delay = 0, 0.0
            elif len(words) == 2 and words[0] == "fail500":
                self.failures_left, self.delay = int(words[1]), 0.0
            elif len(words) == 2 and words[0] == "slow":
                self.failures_left, self.delay = 0, float(words[1])
            else:
                raise ValueError(f"unknown mode {' '.join(words)!r}")

    def answer(self, record):
        """The status and delay for one request, logged (under the lock, so lines never mix)."""
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                status, delay = 500, 0.0
            else:
                status, delay = 200, self.delay
            record.update(status=status, delay=delay)
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
        return status, delay


def handler_for(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass  # the JSON log is the record; stderr stays quiet

        def reply(self, status, text=""):
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.reply(200, "up") if self.path == CONTROL_PATH else self.reply(404)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path == CONTROL_PATH:
                try:
                    state.set_mode(raw.decode().split())
                except ValueError as error:
                    return self.reply(400, str(error))
                return self.reply(200, "ok")
            record = {
                "id": self.headers.get("Pg-Quota-Alert-Id"),
                "signature": self.headers.get("Pg-Quota-Signature"),
                "content_type": self.headers.get("Content-Type"),
                "body": raw.decode("utf-8", errors="surrogateescape"),
                "received_at": time.time(),
            }
            status, delay = state.answer(record)
            time.sleep(delay)
            try:
                self.reply(status, "received")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the dispatcher gave up waiting: that is what "slow" tests

    return Handler


def serve(log_path, port_file, port=0):
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(State(log_path)))
    server.daemon_threads = True
    temporary = port_file + ".tmp"
    with open(temporary, "w") as out:
        out.write(str(server.server_address[1]))
    os.replace(temporary, port_file)  # the port appears whole or not at all
    server.serve_forever()


def control(port, words):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{CONTROL_PATH}", data=" ".join(words).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    elif len(sys.argv) >= 4 and sys.argv[1] == "control":
        control(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
