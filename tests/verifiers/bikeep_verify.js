// Checks deliveries with the bike-parking seed's own Node.js verifier.
// Usage: node bikeep_verify.js SEED DELIVERIES.jsonl  (exit 1 if any fails)
const fs = require('fs');

// --- verbatim from the seed (bikeep-webhooks.txt, "Verification example (Node.js)") ---
const crypto = require('crypto');

function verifyWebhook(payload, seed) {
  const dataJson = JSON.stringify(payload.data);
  const expectedHash = crypto
    .createHash('sha256')
    .update(dataJson + seed)
    .digest('hex');
  return expectedHash === payload.hash;
}
// --- end of the seed's code ---

const [seed, path] = process.argv.slice(2);
let failed = 0;
fs.readFileSync(path, 'utf8').split('\n').filter(Boolean).forEach((line, i) => {
  const delivery = JSON.parse(line);
  const ok = verifyWebhook(JSON.parse(delivery.body), seed);
  console.log(`delivery ${i + 1}: ${ok ? 'OK' : 'FAIL'}`);
  if (!ok) failed++;
});
process.exit(failed ? 1 : 0);
