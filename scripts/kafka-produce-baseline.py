#!/usr/bin/env python3
"""The side-by-side baseline for `prodready bench clients --only kafka`: the same librdkafka (the confluent-kafka
wheel's 2.16) driven from Python, idempotent, 200-byte values, linger.ms 5, keys cycling over 1,000, into a fresh
topic of the given partition count (the Swift benchmark uses 1).

    eval "$(.build/release/prodready up --components s3,kafka)"
    .prodready/venv/bin/python scripts/kafka-produce-baseline.py "$KAFKA_BOOTSTRAP_SERVERS" 1000000 1
"""
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    servers = sys.argv[1]
    try:
        count = int(sys.argv[2])
        partitions = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    except ValueError:
        print("message count and partitions must be whole numbers", file=sys.stderr)
        return 2
    if count < 1 or partitions < 1:
        print("message count and partitions must be at least 1", file=sys.stderr)
        return 2

    topic = f"baseline-{int(time.time() * 1000)}"
    admin = AdminClient({"bootstrap.servers": servers})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)

    producer = Producer({"bootstrap.servers": servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    value = b"x" * 200
    producer.produce(topic, value, key=b"warm-up")
    producer.flush(30)

    delivered = 0
    failed = 0

    def report(error, _message):
        nonlocal delivered, failed
        if error is None:
            delivered += 1
        else:
            failed += 1

    started = time.monotonic()
    for index in range(count):
        while True:
            try:
                producer.produce(topic, value, key=str(index % 1000).encode(), on_delivery=report)
                break
            except BufferError:
                producer.poll(0.005)
        if index % 1000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    elapsed = time.monotonic() - started
    print(f"python produce: {delivered} delivered, {failed} failed, {left} undelivered of {count} "
          f"in {elapsed:.2f} s: {delivered / elapsed:.0f} msg/s")
    return 0 if delivered == count else 1


if __name__ == "__main__":
    sys.exit(main())
