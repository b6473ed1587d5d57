"""Checks deliveries with the bike-parking seed's own Python verifier.

Usage: bikeep_verify.py SEED DELIVERIES.jsonl
Each line of DELIVERIES.jsonl is {"body": "<raw body>", "headers": {...}}.
Prints one line per delivery and exits 1 if any fails.
"""
import json
import sys

# --- verbatim from the seed (bikeep-webhooks.txt, "Verification example (Python)") ---
import hashlib
import json

def verify_webhook(payload, seed):
    data_json = json.dumps(payload['data'], separators=(',', ':'))
    expected = hashlib.sha256((data_json + seed).encode()).hexdigest()
    return expected == payload['hash']
# --- end of the seed's code ---

seed, path = sys.argv[1], sys.argv[2]
failed = 0
with open(path) as f:
    for n, line in enumerate(f, 1):
        delivery = json.loads(line)
        ok = verify_webhook(json.loads(delivery["body"]), seed)
        print(f"delivery {n}: {'OK' if ok else 'FAIL'}")
        failed += not ok
sys.exit(1 if failed else 0)
