# A group consumer with the client named on the command line (confluent-kafka or aiokafka):
# subscribes to TOPIC in GROUP from the earliest offset, reads COUNT records (then waits
# IDLE_S more seconds for any it should not get), commits what it read, prints one
# "partition offset value" line per record and closes (leaving the group).
import asyncio
import sys
import time

client, bootstrap, topic, group, count, idle_s = sys.argv[1:7]
count, idle_s = int(count), float(idle_s)


def confluent():
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    read = []
    deadline = None
    started = time.time()
    while True:
        if len(read) >= count and deadline is None:
            deadline = time.time() + idle_s
        if deadline is not None and time.time() > deadline:
            break
        if time.time() - started > 60:
            raise SystemExit(f"read {len(read)} of {count} records in 60 s")
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            raise SystemExit(f"consumer error: {message.error()}")
        read.append((message.partition(), message.offset(), message.value().decode()))
        consumer.commit(message=message, asynchronous=False)
    consumer.close()
    return read


async def aiokafka():
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    read = []
    try:
        started = time.time()
        deadline = None
        while True:
            if len(read) >= count and deadline is None:
                deadline = time.time() + idle_s
            if deadline is not None and time.time() > deadline:
                break
            if time.time() - started > 60:
                raise SystemExit(f"read {len(read)} of {count} records in 60 s")
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    read.append((r.partition, r.offset, r.value.decode()))
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    return read


if client == "confluent":
    read = confluent()
elif client == "aiokafka":
    read = asyncio.run(aiokafka())
else:
    raise SystemExit(f"unknown client {client}")
for partition, offset, value in read:
    print(partition, offset, value)
