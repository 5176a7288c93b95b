// A kafkajs group consumer: subscribes to TOPIC in GROUP from the beginning, runs
// `consumer.run` until it has read COUNT records (then IDLE_S more seconds), commits as it
// goes (kafkajs's default), prints "partition offset value" per record, and disconnects.
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, group, countArg, idleArg] = process.argv.slice(2);
const count = Number(countArg);
const idleMs = Number(idleArg) * 1000;

async function main() {
  const kafka = new Kafka({ clientId: 'kafkajs-test', brokers: [bootstrap], logLevel: logLevel.WARN });
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const read = [];
  let reachedAt = null;
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      read.push(`${partition} ${message.offset} ${message.value.toString()}`);
    },
  });
  const started = Date.now();
  for (;;) {
    if (read.length >= count && reachedAt === null) reachedAt = Date.now();
    if (reachedAt !== null && Date.now() - reachedAt > idleMs) break;
    if (Date.now() - started > 60000) throw new Error(`read ${read.length} of ${count} records in 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await consumer.disconnect();
  for (const line of read) console.log(line);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
