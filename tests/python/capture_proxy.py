"""A capturing Kafka TCP proxy, for building the fuzz corpus in tests/corpus/.

Forwards bytes both ways unchanged. On the client->broker direction it also parses Kafka
framing (4-byte big-endian length, then the frame) and writes each request frame, without
the length prefix, to OUT/<client>-<apiname>-v<version>-<n>.bin. At most --max-per-key files
per (client, api key, version), frames over --max-bytes are skipped, and so is a frame equal
to one already kept except for its correlation id (so the few slots go to distinct requests).
Files already in OUT count toward the limit, so restarting the proxy never overwrites them.

Usage:
  python capture_proxy.py --listen 127.0.0.1:19093 --upstream 127.0.0.1:19092 \
      --out tests/corpus --client kafka-python
Stops on SIGTERM or SIGINT.
"""
import argparse
import asyncio
import os
import re
import signal
import struct
import sys

# Kafka api keys -> file-name stems (Kafka's names, lower-case, hyphenated).
API_NAMES = {
    0: "produce", 1: "fetch", 2: "list-offsets", 3: "metadata", 4: "leader-and-isr",
    5: "stop-replica", 6: "update-metadata", 7: "controlled-shutdown", 8: "offset-commit",
    9: "offset-fetch", 10: "find-coordinator", 11: "join-group", 12: "heartbeat",
    13: "leave-group", 14: "sync-group", 15: "describe-groups", 16: "list-groups",
    17: "sasl-handshake", 18: "api-versions", 19: "create-topics", 20: "delete-topics",
    21: "delete-records", 22: "init-producer-id", 23: "offset-for-leader-epoch",
    24: "add-partitions-to-txn", 25: "add-offsets-to-txn", 26: "end-txn",
    27: "write-txn-markers", 28: "txn-offset-commit", 29: "describe-acls", 30: "create-acls",
    31: "delete-acls", 32: "describe-configs", 33: "alter-configs",
    34: "alter-replica-log-dirs", 35: "describe-log-dirs", 36: "sasl-authenticate",
    37: "create-partitions", 38: "create-delegation-token", 39: "renew-delegation-token",
    40: "expire-delegation-token", 41: "describe-delegation-token", 42: "delete-groups",
    43: "elect-leaders", 44: "incremental-alter-configs", 45: "alter-partition-reassignments",
    46: "list-partition-reassignments", 47: "offset-delete", 48: "describe-client-quotas",
    49: "alter-client-quotas", 50: "describe-user-scram-credentials",
    51: "alter-user-scram-credentials", 52: "vote", 53: "begin-quorum-epoch",
    54: "end-quorum-epoch", 55: "describe-quorum", 56: "alter-partition",
    57: "update-features", 58: "envelope", 59: "fetch-snapshot", 60: "describe-cluster",
    61: "describe-producers", 62: "broker-registration", 63: "broker-heartbeat",
    64: "unregister-broker", 65: "describe-transactions", 66: "list-transactions",
    67: "allocate-producer-ids", 68: "consumer-group-heartbeat",
    69: "consumer-group-describe", 70: "controller-registration",
    71: "get-telemetry-subscriptions", 72: "push-telemetry", 73: "assign-replicas-to-dirs",
    74: "list-client-metrics-resources", 75: "describe-topic-partitions",
    76: "share-group-heartbeat", 77: "share-group-describe", 78: "share-fetch",
    79: "share-acknowledge", 80: "add-raft-voter", 81: "remove-raft-voter",
    82: "update-raft-voter", 83: "initialize-share-group-state",
    84: "read-share-group-state", 85: "write-share-group-state",
    86: "delete-share-group-state", 87: "read-share-group-state-summary",
}


def api_name(key):
    return API_NAMES.get(key, f"key{key}")


class Corpus:
    """Writes frames to disk, at most max_per_key per (api key, version) for one client."""

    def __init__(self, out_dir, client, max_per_key, max_bytes):
        self.out_dir = out_dir
        self.client = client
        self.max_per_key = max_per_key
        self.max_bytes = max_bytes
        self.used = {}  # (key, version) -> set of taken indices
        self.seen = set()  # frames kept, with the correlation id zeroed
        os.makedirs(out_dir, exist_ok=True)
        names = {v: k for k, v in API_NAMES.items()}
        pattern = re.compile(rf"^{re.escape(client)}-(.+)-v(\d+)-(\d+)\.bin$")
        for entry in os.listdir(out_dir):
            m = pattern.match(entry)
            if not m:
                continue
            stem = m.group(1)
            key = names.get(stem)
            if key is None and stem.startswith("key") and stem[3:].isdigit():
                key = int(stem[3:])
            if key is None:
                continue
            self.used.setdefault((key, int(m.group(2))), set()).add(int(m.group(3)))
            with open(os.path.join(out_dir, entry), "rb") as f:
                self.seen.add(self._shape(f.read()))

    @staticmethod
    def _shape(frame):
        return bytes(frame[:4]) + b"\0\0\0\0" + bytes(frame[8:])

    def add(self, frame):
        if len(frame) > self.max_bytes or len(frame) < 8:
            return
        key, version = struct.unpack(">hh", frame[:4])
        taken = self.used.setdefault((key, version), set())
        shape = self._shape(frame)
        if len(taken) >= self.max_per_key or shape in self.seen:
            return
        self.seen.add(shape)
        n = 0
        while n in taken:
            n += 1
        taken.add(n)
        name = f"{self.client}-{api_name(key)}-v{version}-{n}.bin"
        path = os.path.join(self.out_dir, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(frame)
        os.replace(tmp, path)
        print(f"captured {name} ({len(frame)} bytes)", file=sys.stderr, flush=True)


class FrameParser:
    """Incremental Kafka framing: feed() arbitrary chunks, complete frames go to sink.

    Frames larger than max_bytes are not buffered: their bytes are counted and dropped.
    """

    def __init__(self, sink, max_bytes):
        self.sink = sink
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.skip = 0  # bytes still to drop from an oversized frame

    def feed(self, data):
        view = memoryview(data)
        if self.skip:
            n = min(self.skip, len(view))
            self.skip -= n
            view = view[n:]
        self.buf += view
        while True:
            if self.skip:
                n = min(self.skip, len(self.buf))
                self.skip -= n
                del self.buf[:n]
                if self.skip:
                    return
            if len(self.buf) < 4:
                return
            (length,) = struct.unpack(">i", self.buf[:4])
            if length < 0:
                # Not Kafka framing; stop parsing this connection, keep forwarding.
                self.buf.clear()
                self.skip = 1 << 62
                return
            if length > self.max_bytes:
                del self.buf[:4]
                self.skip = length
                continue
            if len(self.buf) < 4 + length:
                return
            frame = bytes(self.buf[4:4 + length])
            del self.buf[:4 + length]
            self.sink(frame)


async def pump(reader, writer, parser=None):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            if parser is not None:
                parser.feed(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def handle(client_reader, client_writer, upstream, corpus):
    host, port = upstream
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError as e:
        print(f"upstream connect failed: {e}", file=sys.stderr, flush=True)
        client_writer.close()
        return
    parser = FrameParser(corpus.add, corpus.max_bytes)
    tasks = [
        asyncio.create_task(pump(client_reader, up_writer, parser)),
        asyncio.create_task(pump(up_reader, client_writer)),
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for w in (client_writer, up_writer):
            w.close()


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, type=host_port)
    ap.add_argument("--upstream", required=True, type=host_port)
    ap.add_argument("--out", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--max-per-key", type=int, default=3)
    ap.add_argument("--max-bytes", type=int, default=64 * 1024)
    args = ap.parse_args()

    corpus = Corpus(args.out, args.client, args.max_per_key, args.max_bytes)
    conns = set()

    async def on_conn(r, w):
        task = asyncio.current_task()
        conns.add(task)
        try:
            await handle(r, w, args.upstream, corpus)
        finally:
            conns.discard(task)

    server = await asyncio.start_server(on_conn, *args.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"proxy {args.listen} -> {args.upstream}, client {args.client}, out {args.out}",
          file=sys.stderr, flush=True)
    await stop.wait()
    server.close()
    for t in list(conns):
        t.cancel()
    await asyncio.gather(*conns, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
