# A confluent-kafka group member that uses the KIP-848 consumer protocol
# (group.protocol=consumer; the broker assigns and times the session). Prints
# "partition offset" for each record it is given and commits it (synchronously) before the
# next. It runs until killed.
import sys

from confluent_kafka import Consumer, TopicPartition

bootstrap, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "group.protocol": "consumer",
    "client.id": "python-member",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
})
consumer.subscribe([topic])
while True:
    message = consumer.poll(0.1)
    if message is None or message.error():
        continue
    print(f"{message.partition()} {message.offset()}", flush=True)
    consumer.commit(offsets=[TopicPartition(topic, message.partition(), message.offset() + 1)], asynchronous=False)
