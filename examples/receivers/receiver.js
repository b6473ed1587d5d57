// A webhook receiver for hookhost deliveries, in Node's standard library.
//
// Usage: node receiver.js PORT SEED [WHSEC_SECRET]
//
// Checks each delivery's bike-parking hash (the seed's own function,
// verbatim) and, given a secret, its Standard Webhooks signature; answers 200
// if the checks pass and 401 if not, and prints one line per delivery.
const http = require('http');

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

// Standard Webhooks: any `v1,<sig>` in webhook-signature must match.
function verifyStandard(headers, body, secret) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const signed = `${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`;
  const expected = 'v1,' + crypto.createHmac('sha256', key).update(signed).digest('base64');
  return (headers['webhook-signature'] || '').split(' ').some((sig) =>
    sig.length === expected.length &&
    crypto.timingSafeEqual(Buffer.from(sig), Buffer.from(expected)));
}

const [port, seed, secret] = process.argv.slice(2);
http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const payload = JSON.parse(body);
    const okHash = verifyWebhook(payload, seed);
    const okSig = !secret || verifyStandard(req.headers, body, secret);
    console.log(`${req.headers['webhook-id']} ${payload.type} ` +
      `hash=${okHash ? 'OK' : 'FAIL'} signature=${okSig ? 'OK' : 'FAIL'}`);
    res.writeHead(okHash && okSig ? 200 : 401);
    res.end();
  });
}).listen(Number(port), '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
