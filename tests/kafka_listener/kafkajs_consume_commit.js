// A kafkajs 2 group consumer that reads WANT records of TOPIC, commits them, and stops:
// node kafkajs_consume_commit.js BROKER TOPIC GROUP WANT; prints [[offset, value], ...] as JSON.
// It also keeps what arrives for QUIET_MS after the WANT-th record (nothing more is expected).
const { Kafka, logLevel } = require("kafkajs");

const QUIET_MS = 3000;

async function main() {
  const [broker, topic, group, want] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "kafkajs-epochs", brokers: [broker], logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: group });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const got = [];
  let enough;
  const reached = new Promise((resolve) => { enough = resolve; });
  await consumer.run({
    eachMessage: async ({ message }) => {
      got.push([Number(message.offset), message.value.toString()]);
      if (got.length === Number(want)) enough();
    },
  });
  await reached;
  await new Promise((r) => setTimeout(r, QUIET_MS));
  await consumer.disconnect();  // commits what it has resolved
  console.log(JSON.stringify(got));
}

setTimeout(() => { console.error("timed out"); process.exit(2); }, 90000).unref();
main().catch((e) => { console.error(e); process.exit(1); });
