#!/usr/bin/env python3
"""A loopback stand-in for Google's OAuth2 token endpoint and FCM HTTP v1.

POST /token answers a fixed access token. POST /v1/projects/P/messages:send answers
according to the current mode and records the request. The driver switches the mode
and reads the record over the same port:

  PUT  /_e2e/mode      body: ok | unregistered | unavailable
  GET  /_e2e/sends     the recorded sends, oldest first, as a JSON list
  GET  /_e2e/tokens    how many token requests arrived

Listens on 127.0.0.1, port 0; writes the port to --port-file once it accepts.
"""

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = {"access_token": "ya29.e2e", "expires_in": 3599, "token_type": "Bearer"}
ACCEPTED = {"name": "projects/p/messages/1"}
UNREGISTERED = {
    "error": {
        "code": 404,
        "status": "NOT_FOUND",
        "details": [
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNREGISTERED",
            }
        ],
    }
}
UNAVAILABLE = {"error": {"code": 503, "status": "UNAVAILABLE", "message": "e2e outage"}}
SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
MODES = ("ok", "unregistered", "unavailable")


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.mode = "ok"
        self.sends = []
        self.tokens = 0


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fcm-standin"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))
        sys.stderr.flush()

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/_e2e/sends":
            with STATE.lock:
                self.answer(200, STATE.sends)
        elif self.path == "/_e2e/tokens":
            with STATE.lock:
                self.answer(200, {"tokens": STATE.tokens})
        else:
            self.answer(404, {"error": "no such path"})

    def do_PUT(self):
        body = self.body().decode().strip()
        if self.path == "/_e2e/mode" and body in MODES:
            with STATE.lock:
                STATE.mode = body
            self.answer(200, {"mode": body})
        else:
            self.answer(400, {"error": "bad mode"})

    def do_POST(self):
        raw = self.body()
        if self.path == "/token":
            form = urllib.parse.parse_qs(raw.decode(errors="replace"))
            grant = form.get("grant_type", [""])[0]
            if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion"):
                self.answer(400, {"error": "invalid_grant"})
                return
            with STATE.lock:
                STATE.tokens += 1
            self.answer(200, TOKEN)
            return
        match = SEND_PATH.match(self.path)
        if not match:
            self.answer(404, {"error": "no such path"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with STATE.lock:
            mode = STATE.mode
            STATE.sends.append(
                {
                    "time": time.time(),
                    "project": match.group(1),
                    "authorization": self.headers.get("Authorization"),
                    "body": body,
                    "mode": mode,
                }
            )
        if mode == "ok":
            self.answer(200, ACCEPTED)
        elif mode == "unregistered":
            self.answer(404, UNREGISTERED)
        else:
            self.answer(503, UNAVAILABLE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Rename so a reader never sees a half-written port.
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
