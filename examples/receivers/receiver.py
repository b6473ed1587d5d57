"""A webhook receiver for hookhost deliveries, in Python's standard library.

Usage: python3 receiver.py PORT SEED [WHSEC_SECRET]

Checks each delivery's bike-parking hash (the seed's own function, verbatim)
and, given a secret, its Standard Webhooks signature; answers 200 if the
checks pass and 401 if not, and prints one line per delivery.
"""
import base64
import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# --- verbatim from the seed (bikeep-webhooks.txt, "Verification example (Python)") ---
def verify_webhook(payload, seed):
    data_json = json.dumps(payload['data'], separators=(',', ':'))
    expected = hashlib.sha256((data_json + seed).encode()).hexdigest()
    return expected == payload['hash']
# --- end of the seed's code ---


def verify_standard(headers, body, secret):
    """Standard Webhooks: any `v1,<sig>` in webhook-signature must match."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig, "v1," + expected)
        for sig in headers.get("webhook-signature", "").split()
    )


PRINT_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        payload = json.loads(body)
        ok_hash = verify_webhook(payload, SEED)
        ok_sig = SECRET is None or verify_standard(self.headers, body, SECRET)
        ok = ok_hash and ok_sig
        line = (
            f"{self.headers.get('webhook-id')} {payload.get('type')} "
            f"hash={'OK' if ok_hash else 'FAIL'} "
            f"signature={'OK' if ok_sig else 'FAIL'}\n"
        )
        with PRINT_LOCK:  # requests are served on several threads
            sys.stdout.write(line)
            sys.stdout.flush()
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass  # one line per delivery is printed above


if __name__ == "__main__":
    PORT, SEED = int(sys.argv[1]), sys.argv[2]
    SECRET = sys.argv[3] if len(sys.argv) > 3 else None
    print(f"listening on 127.0.0.1:{PORT}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
