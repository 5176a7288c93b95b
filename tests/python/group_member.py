# A kafka-python group member for the librdkafka group tests: range assignment, a 6 s session,
# prints "partition offset" for each record it is given and commits it (synchronously) before
# the next. It runs until killed.
import sys

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

bootstrap, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
consumer = KafkaConsumer(
    topic,
    bootstrap_servers=[bootstrap],
    group_id=group,
    client_id="python-member",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    session_timeout_ms=6000,
    heartbeat_interval_ms=1000,
)
for record in consumer:
    print(f"{record.partition} {record.offset}", flush=True)
    tp = TopicPartition(record.topic, record.partition)
    consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
