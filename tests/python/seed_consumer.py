# The consumer example from the project's seed (shared/seed/kafka-overview.md), verbatim.
from kafka import KafkaConsumer
import json

class KafkaMessageConsumer:
    def __init__(self, topics, group_id, bootstrap_servers=['localhost:9092']):
        self.consumer = KafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            auto_offset_reset='earliest',
            enable_auto_commit=True,
            value_deserializer=lambda x: json.loads(x.decode('utf-8'))
        )

    def consume_messages(self):
        try:
            for message in self.consumer:
                print(f"Topic: {message.topic}")
                print(f"Partition: {message.partition}")
                print(f"Offset: {message.offset}")
                print(f"Key: {message.key}")
                print(f"Value: {message.value}")
                # Process message here
                yield message.value
        except Exception as e:
            print(f"Error consuming messages: {str(e)}")

    def close(self):
        self.consumer.close()

# Usage example
consumer = KafkaMessageConsumer(['orders'], 'order-processing-group')
for message in consumer.consume_messages():
    # Process message
    print(f"Processing order: {message}")
consumer.close()
