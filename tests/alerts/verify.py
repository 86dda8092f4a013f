#!/usr/bin/env python3
"""Checks what tests/alerts/receiver.py logged for a set of alert ids.

  verify.py check LOG SECRET IDS TIMEOUT [--duplicates]
      Every request for one of IDS (comma-separated alert ids): the body parses as JSON and its
      "id" is the Pg-Quota-Alert-Id header; Content-Type is application/json; the signature
      verifies with SECRET and would not with a wrong one; its timestamp is within 5 minutes
      of the arrival. Every id was delivered: answered 200 in less than TIMEOUT seconds (the
      dispatcher's). Every copy of one id has the same body. With --duplicates, at least one
      id arrived more than once (at-least-once after a crash). Prints a summary, exits 1 on
      the first failure, with what failed.
  verify.py count LOG IDS
      How many requests for IDS arrived (answered or not yet).
  verify.py last LOG IDS
      The id of the last request for IDS that arrived (nothing when none did).
"""
import hashlib
import hmac
import json
import os
import re
import sys

SIGNATURE = re.compile(r"t=(\d+),v1=([0-9a-f]{64})")
TOLERANCE_SECONDS = 300


def requests_for(log_path, ids):
    if not os.path.exists(log_path):
        return []  # nothing arrived yet
    with open(log_path, encoding="utf-8") as log:
        records = [json.loads(line) for line in log if line.strip()]
    return [r for r in records if r["id"] in ids]


def signature_verifies(secret, header, body):
    match = SIGNATURE.fullmatch(header or "")
    if not match:
        return False
    timestamp, digest = match.groups()
    expected = hmac.new(secret.encode(), f"{timestamp}.{body}".encode("utf-8", "surrogateescape"), hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), digest)


def check(log_path, secret, ids, timeout, want_duplicates):
    def fail(message):
        sys.exit(f"verify: {message}")

    if not ids:
        fail("no alert ids to check")
    requests = requests_for(log_path, ids)
    bodies = {}
    for request in requests:
        alert_id, body = request["id"], request["body"]
        where = f"request for alert {alert_id} at {request['received_at']:.3f}"
        try:
            payload = json.loads(body)
        except ValueError as error:
            fail(f"{where}: the body is not JSON ({error}): {body!r}")
        if str(payload.get("id")) != alert_id:
            fail(f"{where}: the body's id {payload.get('id')!r} is not the header's {alert_id!r}")
        if request["content_type"] != "application/json":
            fail(f"{where}: Content-Type {request['content_type']!r}")
        if not signature_verifies(secret, request["signature"], body):
            fail(f"{where}: signature {request['signature']!r} does not verify")
        if signature_verifies(secret + "-wrong", request["signature"], body):
            fail(f"{where}: the signature verifies with a wrong secret too")
        signed_at = int(SIGNATURE.fullmatch(request["signature"]).group(1))
        if abs(request["received_at"] - signed_at) > TOLERANCE_SECONDS:
            fail(f"{where}: signed at {signed_at}, more than {TOLERANCE_SECONDS} s away")
        if bodies.setdefault(alert_id, body) != body:
            fail(f"alert {alert_id} arrived with two different bodies: {bodies[alert_id]!r} and {body!r}")

    delivered = {r["id"] for r in requests if r["status"] == 200 and r["delay"] < timeout}
    missing = sorted(ids - delivered, key=int)
    if missing:
        fail(f"alerts never answered 200 in time: {', '.join(missing)}")
    copies = {alert_id: sum(r["id"] == alert_id for r in requests) for alert_id in ids}
    duplicated = sorted((i for i, n in copies.items() if n > 1), key=int)
    if want_duplicates and not duplicated:
        fail("no alert arrived twice, though one was in flight when the dispatcher was killed")
    print(f"verify: {len(ids)} alerts, {len(requests)} requests signed and well-formed"
          + (f", duplicates (identical) of {', '.join(duplicated)}" if duplicated else ""))


def main(argv):
    if len(argv) in (6, 7) and argv[1] == "check" and argv[6:] in ([], ["--duplicates"]):
        check(argv[2], argv[3], set(filter(None, argv[4].split(","))), float(argv[5]), argv[6:] == ["--duplicates"])
    elif len(argv) == 4 and argv[1] == "count":
        print(len(requests_for(argv[2], set(argv[3].split(",")))))
    elif len(argv) == 4 and argv[1] == "last":
        requests = requests_for(argv[2], set(argv[3].split(",")))
        print(requests[-1]["id"] if requests else "")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
