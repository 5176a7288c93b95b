# The producer example from the project's seed (shared/seed/kafka-overview.md), verbatim.
from kafka import KafkaProducer
import json

class KafkaMessageProducer:
    def __init__(self, bootstrap_servers=['localhost:9092']):
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            value_serializer=lambda v: json.dumps(v).encode('utf-8'),
            acks='all'
        )

    def send_message(self, topic, message, key=None):
        future = self.producer.send(
            topic,
            value=message,
            key=key.encode() if key else None
        )
        try:
            record_metadata = future.get(timeout=10)
            print(f"Message sent to topic {record_metadata.topic}")
            print(f"Partition: {record_metadata.partition}")
            print(f"Offset: {record_metadata.offset}")
        except Exception as e:
            print(f"Error sending message: {str(e)}")

    def close(self):
        self.producer.close()

# Usage example
producer = KafkaMessageProducer()
producer.send_message(
    'orders',
    {'order_id': '123', 'product': 'laptop'},
    key='order-123'
)
producer.close()
