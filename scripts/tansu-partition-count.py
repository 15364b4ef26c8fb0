#!/usr/bin/env python3
# Does spreading a topic over more partitions keep the embedded broker fast as messages pile up? Creates a fresh
# topic with PARTITIONS partitions, attaches two consumer groups (fetch.wait.max.ms=20, as the OMS workers), then
# produces TOTAL single-message batches at RATE per second and prints, every 250 messages, the produce -> consume
# latency of the last 10 s and the CPU of the given broker and S3 processes. Run against a stack:
#   eval "$(.build/debug/prodready env)"
#   .prodready/venv/bin/python scripts/tansu-partition-count.py "$KAFKA_BOOTSTRAP_SERVERS" 12 2000 40 "$(pgrep tansu),$(pgrep -f "weed mini" | head -1)"
import os
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
servers, partitions, total, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
topic = f"p{partitions}-" + uuid.uuid4().hex[:6]
admin = AdminClient({"bootstrap.servers": servers}); admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
def cpu(pids):
    t = 0
    for p in pids:
        f = open(f"/proc/{p}/stat").read().split(")")[1].split()
        t += int(f[11]) + int(f[12])
    return t / os.sysconf("SC_CLK_TCK")
pids = [int(x) for x in sys.argv[5].split(",")]
sent = {}
lat = {0: [], 1: []}
stop = False
def consume(i):
    c = Consumer({"bootstrap.servers": servers, "group.id": f"g{i}-{topic}", "auto.offset.reset": "earliest", "fetch.wait.max.ms": 20, "session.timeout.ms": 3000, "heartbeat.interval.ms": 1000})
    c.subscribe([topic])
    while not stop:
        m = c.poll(0.2)
        if m is None or m.error(): continue
        k = m.value().decode()
        if k in sent: lat[i].append((time.time(), (time.time() - sent[k]) * 1000))
    c.close()
threads = [threading.Thread(target=consume, args=(i,)) for i in (0, 1)]
for t in threads: t.start()
time.sleep(8)
c0 = cpu(pids); c1 = cpu(pids[:1]); t0 = time.time()
time.sleep(10)
print(f"P={partitions} idle cpu {(cpu(pids)-c0)/(time.time()-t0)*100:.0f}%", flush=True)
p = Producer({"bootstrap.servers": servers, "linger.ms": 0, "enable.idempotence": True})
c0 = cpu(pids); c1 = cpu(pids[:1]); t0 = time.time()
for n in range(total):
    k = str(n)
    sent[k] = time.time()
    p.produce(topic, key=k.encode(), value=k.encode()); p.flush()
    nxt = t0 + (n + 1) / rate
    if nxt > time.time(): time.sleep(nxt - time.time())
    if (n + 1) % 250 == 0:
        now = time.time()
        w = sorted(l for (ts, l) in lat[0] + lat[1] if ts > now - 10)
        print(f"P={partitions} {n+1} msgs at {now-t0:.0f}s: last-10s latency p50 {w[len(w)//2] if w else -1:.0f} ms p95 {w[int(len(w)*.95)] if w else -1:.0f} ms n={len(w)} cpu {(cpu(pids)-c0)/(now-t0)*100:.0f}% tansu {(cpu(pids[:1])-c1)/(now-t0)*100:.0f}%", flush=True)
time.sleep(5)
stop = True
for t in threads: t.join()
print(f"P={partitions} received {len(lat[0])} / {len(lat[1])} of {total}")
