// kafkajs admin resetOffsets / setOffsets on an edgebus group:
// node kafkajs_reset_offsets.js BROKER TOPIC GROUP; prints one JSON line per step.
// resetOffsets commits -2 (earliest) through a paused consumer's seek: Kafka stores it as sent.
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [broker, topic, group] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "kafkajs-reset", brokers: [broker], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const committed = async () => (await admin.fetchOffsets({ groupId: group, topics: [topic] }))[0]
    .partitions.map((p) => [p.partition, p.offset]);
  const steps = {};
  await admin.resetOffsets({ groupId: group, topic, earliest: true });
  steps.after_reset_earliest = await committed();
  await admin.setOffsets({ groupId: group, topic, partitions: [{ partition: 0, offset: "2" }] });
  steps.after_set_2 = await committed();
  console.log(JSON.stringify(steps));
  await admin.disconnect();
}

// A crashed consumer inside resetOffsets never settles its promise: bound the whole run.
setTimeout(() => { console.error("timed out"); process.exit(2); }, 30000).unref();
main().catch((e) => { console.error(e); process.exit(1); });
