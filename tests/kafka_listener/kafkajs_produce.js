// kafkajs (npm) producing to the edgebus Kafka listener: node kafkajs_produce.js BROKER TOPIC N
const { Kafka, logLevel, CompressionTypes } = require("kafkajs");

async function main() {
  const [broker, topic, n] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "kafkajs-test", brokers: [broker], logLevel: logLevel.ERROR });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < Number(n); i++) {
    messages.push({ key: `k${i}`, value: `from kafkajs ${i}`, partition: 0, headers: { src: "js" } });
  }
  const result = await producer.send({ topic, messages, acks: -1, compression: CompressionTypes.GZIP });
  console.log(JSON.stringify(result));
  await producer.disconnect();
}

main().catch((e) => { console.error(e); process.exit(1); });
