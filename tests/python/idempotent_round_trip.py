"""kafka-python end to end: create a 3-partition topic with the admin client, send N keyed
records with the idempotent producer (kafka-python's default, acks=all), read them all back
without a group and check count, per-partition order and content. Exits non-zero on a mismatch.
Usage: idempotent_round_trip.py TOPIC N
"""
import sys
from collections import defaultdict

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic


def main():
    topic, count = sys.argv[1], int(sys.argv[2])
    admin = KafkaAdminClient(bootstrap_servers=['localhost:9092'])
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()

    producer = KafkaProducer(bootstrap_servers=['localhost:9092'], acks='all', enable_idempotence=True,
                             linger_ms=5, compression_type='gzip')
    futures = [producer.send(topic, key=f"key-{i % 17}".encode(), value=f"value-{i}".encode()) for i in range(count)]
    producer.flush()
    sent = defaultdict(list)
    for i, future in enumerate(futures):
        metadata = future.get(timeout=30)
        sent[metadata.partition].append((metadata.offset, f"value-{i}"))
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=['localhost:9092'], group_id=None,
                             auto_offset_reset='earliest', enable_auto_commit=False, consumer_timeout_ms=5000)
    read = defaultdict(list)
    for message in consumer:
        read[message.partition].append((message.offset, message.value.decode()))
        if sum(len(v) for v in read.values()) >= count:
            break
    consumer.close()

    for partition in sorted(set(sent) | set(read)):
        if sorted(sent[partition]) != read[partition]:
            print(f"partition {partition}: sent {len(sent[partition])} records, read {len(read[partition])}; first difference "
                  f"{next(((a, b) for a, b in zip(sorted(sent[partition]), read[partition]) if a != b), None)}")
            sys.exit(1)
    print(f"ok: {count} records over {len(read)} partitions read back in order")


if __name__ == "__main__":
    main()
