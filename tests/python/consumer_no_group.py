"""The seed's consumer, with group_id=None (group coordination arrives with a later issue).

Reads every record of a topic from the beginning and prints one JSON line per record:
{"topic", "partition", "offset", "key", "value"}. Exits when no record arrives for 5 s.
Usage: consumer_no_group.py TOPIC [EXPECTED_COUNT]
"""
import json
import sys

from kafka import KafkaConsumer


def main():
    topic = sys.argv[1]
    expected = int(sys.argv[2]) if len(sys.argv) > 2 else None
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=['localhost:9092'],
        group_id=None,
        auto_offset_reset='earliest',
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        value_deserializer=lambda x: json.loads(x.decode('utf-8')),
    )
    seen = 0
    for message in consumer:
        print(json.dumps({
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "key": message.key.decode() if message.key is not None else None,
            "value": message.value,
        }), flush=True)
        seen += 1
        if expected is not None and seen >= expected:
            break
    consumer.close()


if __name__ == "__main__":
    main()
