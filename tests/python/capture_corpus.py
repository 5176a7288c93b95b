"""Drives real Kafka clients through capture_proxy.py to build the fuzz corpus tests/corpus/.

Two modes:

  # drive one client library against a proxy already listening on --bootstrap
  python capture_corpus.py drive --client kafka-python --bootstrap 127.0.0.1:19093
  python capture_corpus.py drive --client confluent-kafka --bootstrap 127.0.0.1:19093

  # do everything: per client library, a fresh broker (data in a temp dir) advertising the
  # proxy's address, a proxy writing to --out, the driver, then stop both
  python capture_corpus.py all --broker target/debug/broker --out tests/corpus

Needs kafka-python==3.0.12 and confluent-kafka installed in the running interpreter.
Steps the broker refuses (group APIs, ...) are logged and skipped: the frames the client
sent are captured all the same.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

TOPIC = "corpus-topic"
TOPIC2 = "corpus-topic-2"
# One client id for every kafka-python client, so their identical bootstrap requests are
# deduplicated by the proxy and its 3 slots per (api, version) go to distinct requests.
CLIENT_ID = "corpus-client"
CLIENTS = ("kafka-python", "confluent-kafka")


def value(i):
    # compressible enough that librdkafka keeps the compressed batch (it sends a batch
    # uncompressed when compression does not make it smaller)
    return (f"value-{i}-" + "abcdefgh" * 24).encode()


def log(msg):
    print(f"[capture] {msg}", file=sys.stderr, flush=True)


def step(name, fn):
    log(f"step: {name}")
    try:
        fn()
    except Exception:  # a refused request must not stop the rest of the capture
        log(f"step {name} failed (kept going):\n{traceback.format_exc()}")


# --------------------------------------------------------------------------- kafka-python

def drive_kafka_python(bootstrap):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    def create_topic():
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
        try:
            admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
        finally:
            admin.close()

    def produce(**cfg):
        # linger so that each producer sends one Produce request (the 3 slots per
        # api/version are not all taken by the first producer's requests)
        producer = KafkaProducer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, linger_ms=100,
                                 **cfg)
        try:
            for i in range(20):
                producer.send(TOPIC, key=f"key-{i}".encode(), value=value(i),
                              headers=[("h-index", str(i).encode()), ("h-empty", b"")])
            producer.flush(timeout=15)
        finally:
            producer.close(timeout=5)

    def consume():
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, group_id=None,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=4000)
        try:
            consumer.assign([TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
            n = sum(1 for _ in consumer)
            log(f"kafka-python consumer read {n} records")
        finally:
            consumer.close()

    def metadata_all():
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
        try:
            log(f"topics: {admin.list_topics()}")
        finally:
            admin.close()
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, group_id=None)
        try:
            log(f"consumer.topics(): {sorted(consumer.topics())}")
        finally:
            consumer.close()

    # metadata for all topics early, before the topic-specific metadata fills the slots
    step("create topic", create_topic)
    step("metadata all topics", metadata_all)
    step("produce acks=all idempotent", lambda: produce(acks="all"))
    step("produce acks=1 gzip", lambda: produce(acks=1, compression_type="gzip"))
    step("consume without group", consume)


# --------------------------------------------------------------------------- confluent-kafka

def drive_confluent(bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    def create_topics(name, partitions):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                                replication_factor=1)])
        for topic, fut in futures.items():
            fut.result(timeout=15)

    def produce(compression):
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                             "compression.type": compression, "linger.ms": 50})
        for i in range(20):
            producer.produce(TOPIC, key=f"key-{i}".encode(), value=value(i),
                             headers=[("h-index", str(i).encode()), ("h-empty", b"")])
        left = producer.flush(15)
        if left:
            raise RuntimeError(f"{left} records not delivered")

    def consume():
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "corpus-group",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            consumer.assign([TopicPartition(TOPIC, 0, 0), TopicPartition(TOPIC, 1, 0)])
            n, deadline = 0, time.time() + 5
            while time.time() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    n += 1
            log(f"confluent consumer read {n} records")
        finally:
            consumer.close()

    def list_topics():
        admin = AdminClient({"bootstrap.servers": bootstrap})
        log(f"topics: {sorted(admin.list_topics(timeout=10).topics)}")

    step("create topic", lambda: create_topics(TOPIC, 2))
    step("admin list_topics", list_topics)
    step("produce idempotent lz4", lambda: produce("lz4"))
    step("produce idempotent zstd", lambda: produce("zstd"))
    step("consume with assign()", consume)
    step("admin create second topic", lambda: create_topics(TOPIC2, 1))


# --------------------------------------------------------------------------- orchestration

def wait_port(host, port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{host}:{port} did not open within {timeout}s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_all(args):
    here = os.path.dirname(os.path.abspath(__file__))
    host = "127.0.0.1"
    for client in args.clients:
        work = tempfile.mkdtemp(prefix="capture-")
        data = os.path.join(work, "data")
        broker_log = open(os.path.join(work, "broker.log"), "w")
        broker = proxy = None
        try:
            broker = subprocess.Popen([
                args.broker,
                "--override", f"listeners=PLAINTEXT://{host}:{args.broker_port}",
                "--override", f"advertised.listeners=PLAINTEXT://{host}:{args.proxy_port}",
                "--override", f"log.dirs={data}",
            ], stdout=broker_log, stderr=subprocess.STDOUT)
            wait_port(host, args.broker_port)
            proxy = subprocess.Popen([
                sys.executable, os.path.join(here, "capture_proxy.py"),
                "--listen", f"{host}:{args.proxy_port}",
                "--upstream", f"{host}:{args.broker_port}",
                "--out", args.out, "--client", client,
            ])
            wait_port(host, args.proxy_port)
            subprocess.run([sys.executable, os.path.abspath(__file__), "drive",
                            "--client", client, "--bootstrap", f"{host}:{args.proxy_port}"],
                           check=False, timeout=300)
        finally:
            for p in (proxy, broker):
                if p is not None:
                    stop(p)
            broker_log.close()
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="Capture a fuzz corpus from real Kafka clients.")
    sub = ap.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("drive", help="drive one client library against a running proxy")
    d.add_argument("--client", required=True, choices=CLIENTS)
    d.add_argument("--bootstrap", default="127.0.0.1:19093")
    a = sub.add_parser("all", help="fresh broker + proxy per client library, then drive it")
    a.add_argument("--broker", required=True, help="path to the broker binary")
    a.add_argument("--out", required=True, help="corpus directory")
    a.add_argument("--broker-port", type=int, default=19092)
    a.add_argument("--proxy-port", type=int, default=19093)
    a.add_argument("--clients", nargs="+", default=list(CLIENTS), choices=CLIENTS)
    args = ap.parse_args()
    if args.mode == "drive":
        {"kafka-python": drive_kafka_python, "confluent-kafka": drive_confluent}[args.client](
            args.bootstrap)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
