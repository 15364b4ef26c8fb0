#!/usr/bin/env python3
# Does a fetch from the embedded broker get slower as its partition grows? Produces single-message batches (as the
# OMS publisher sends them) into a fresh one-partition topic and, every 500 messages, times 20 produce -> consume
# round trips. Run against a stack's broker:
#   eval "$(.build/debug/prodready env)"; .prodready/venv/bin/python scripts/tansu-partition-growth.py "$KAFKA_BOOTSTRAP_SERVERS"
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

servers = sys.argv[1]
steps = [int(step) for step in sys.argv[2].split(",")] if len(sys.argv) > 2 else [0, 500, 1000, 1500, 2000]
topic = "growth-" + uuid.uuid4().hex[:8]
admin = AdminClient({"bootstrap.servers": servers})
admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
producer = Producer({"bootstrap.servers": servers, "linger.ms": 0, "enable.idempotence": True})
consumer = Consumer({"bootstrap.servers": servers, "group.id": "g-" + topic, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 20, "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, 0, 0)])
total = 0
for step in steps:
    while total < step:
        producer.produce(topic, b"x" * 200)
        producer.flush()
        total += 1
    while consumer.poll(0.5) is not None:
        pass
    latencies = []
    for _ in range(20):
        started = time.time()
        producer.produce(topic, b"probe")
        producer.flush()
        total += 1
        while True:
            message = consumer.poll(5)
            if message is not None and not message.error():
                break
        latencies.append((time.time() - started) * 1000)
    latencies.sort()
    print(f"{total:5d} messages: produce -> consume p50 {latencies[10]:.0f} ms, max {latencies[-1]:.0f} ms", flush=True)
