"""Verifies Standard Webhooks signatures from the specification alone
(https://www.standardwebhooks.com), with Python's standard library: no code
shared with hookhost.

Usage: standard_webhooks_verify.py SECRET DELIVERIES.jsonl
A delivery passes if one of the `v1,` signatures in `webhook-signature`
equals base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), where key is the
base64-decoded part of SECRET after `whsec_`.
"""
import base64
import hashlib
import hmac
import json
import sys

secret, path = sys.argv[1], sys.argv[2]
key = base64.b64decode(secret.removeprefix("whsec_"))
failed = 0
with open(path) as f:
    for n, line in enumerate(f, 1):
        d = json.loads(line)
        h = d["headers"]
        signed = f'{h["webhook-id"]}.{h["webhook-timestamp"]}.{d["body"]}'.encode()
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        sigs = [s.split(",", 1)[1] for s in h["webhook-signature"].split(" ") if s.startswith("v1,")]
        ok = any(hmac.compare_digest(expected, s) for s in sigs)
        print(f"delivery {n}: {'OK' if ok else 'FAIL'}")
        failed += not ok
sys.exit(1 if failed else 0)
