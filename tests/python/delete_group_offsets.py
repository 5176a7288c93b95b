"""kafka-python's admin client deletes one group's committed offsets (OffsetDelete).

usage: delete_group_offsets.py BOOTSTRAP GROUP TOPIC PARTITION
Prints `TOPIC PARTITION ERROR` for each partition, or `error NAME` for a group-level error.
"""
import sys

from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import KafkaError

bootstrap, group, topic, partition = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
try:
    results = admin.delete_group_offsets(group, [TopicPartition(topic, partition)])
except KafkaError as e:
    print("error", type(e).__name__)
else:
    for tp, error in sorted(results.items()):
        print(tp.topic, tp.partition, error.__name__)
finally:
    admin.close()
