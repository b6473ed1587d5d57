"""1,000,000 pending deliveries (issue: steady state; BENCHMARKS.md).

8 clients post batches of 1,000 small `report` events (~100 bytes of data)
to a `hookhost serve` whose one subscription's endpoint refuses connections
(first retry after 1 h), so every delivery stays pending. Prints ingest
events/s, the server's RSS (peak during ingest, at its end, 30 s later),
the data folder against the events' data, and RSS after a restart on the
same folder.

    python3 tests/tools/pending_1m.py target/release/hookhost after

SERVER_EXTRA adds lines to the config's [server] section (say
"cache_mib = 64"); EVENTS posts another number (a multiple of 8,000); WRAP
runs the server under a tool (say "heaptrack -o /tmp/ht"; the RSS figures
are then the tool's, not the server's).
"""
import http.client, json, os, shutil, subprocess, sys, threading, time
binary, tag = sys.argv[1], sys.argv[2]
root = f"/tmp/p1m/{tag}"
shutil.rmtree(root, ignore_errors=True); os.makedirs(root + "/plugins")
port = 18000 + (hash(tag) % 1000)
open(f"{root}/hookhost.toml", "w").write(f"""[delivery]
allowed_networks = ["127.0.0.1"]
max_jobs_in_memory = 100000
[server]
listen = "127.0.0.1:{port}"
data_dir = "db"
{os.environ.get("SERVER_EXTRA", "")}
[plugins]
dir = "plugins"
watch = false
[[subscriptions]]
id = "down"
url = "http://127.0.0.1:9/down"
types = ["*"]
envelope = "plain"
[subscriptions.retry]
backoff = "exponential"
backoff_ms = 3600000
max_retries = 5
""")
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1]) // 1024
def du(p):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(p) for f in fs) // (1 << 20)
def start():
    p = subprocess.Popen(os.environ.get("WRAP", "").split() + [binary, "serve", "--config", f"{root}/hookhost.toml"], stdout=subprocess.DEVNULL, stderr=open(f"{root}/log", "a"))
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/healthz"); c.getresponse().read(); return p
        except OSError: time.sleep(0.1)
srv = start()
N, B, C = int(os.environ.get("EVENTS", 1_000_000)), 1000, 8
data_bytes = [0]
counting = threading.Lock()
def client(k):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for b in range(k, N // B, C):
        evs = [{"type": "report", "data": {"n": b * B + i, "pad": "x" * 80}} for i in range(B)]
        body = json.dumps(evs)
        with counting:
            data_bytes[0] += sum(len(json.dumps(e["data"])) for e in evs)
        while True:
            c.request("POST", "/v1/events", body, {"content-type": "application/json"})
            r = c.getresponse(); r.read()
            if r.status == 202: break
            time.sleep(0.05)
t0 = time.time()
ts = [threading.Thread(target=client, args=(k,)) for k in range(C)]
[t.start() for t in ts]; peak = 0
while any(t.is_alive() for t in ts):
    peak = max(peak, rss(srv.pid)); time.sleep(1)
secs = time.time() - t0
end_rss = rss(srv.pid)
time.sleep(30); later = rss(srv.pid)
srv.terminate(); srv.wait()
folder = du(f"{root}/db")
srv = start(); time.sleep(20); restart = rss(srv.pid)
c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/metrics")
gauges = {l.split()[0]: l.split()[1] for l in c.getresponse().read().decode().splitlines()
          if l.startswith(("hookhost_delivery_queue_depth ", "hookhost_delivery_waiting_later "))}
srv.terminate(); srv.wait()
print(f"{tag}: ingest {N/secs:.0f} ev/s; RSS peak {peak} MiB, end {end_rss}, +30 s {later}; folder {folder} MiB "
      f"({folder/(data_bytes[0]/(1<<20)):.0f}x of {data_bytes[0]>>20} MiB data); after restart {restart} MiB "
      f"(in memory: {gauges.get('hookhost_delivery_queue_depth')}, waiting later: {gauges.get('hookhost_delivery_waiting_later')})")
