// kafkajs against the Kafka listener as a user would run it (test_kafkajs_txn_admin.py): a
// transactional producer (gzip, one aborted transaction, offsets sent to a group), read back
// read_committed and read_uncommitted, then the admin calls. Prints one JSON object.
const { Kafka, logLevel, CompressionTypes, ConfigResourceTypes } = require("kafkajs");

const kafka = new Kafka({ brokers: [process.argv[2]], logLevel: logLevel.ERROR });

async function readAll(readUncommitted, want) {
  const c = kafka.consumer({ groupId: `jstx-read-${readUncommitted}`, readUncommitted });
  await c.connect();
  await c.subscribe({ topics: ["jstx"], fromBeginning: true });
  const got = [];
  let end = false;
  c.on(c.events.END_BATCH_PROCESS, () => { if (got.length >= want) end = true; });
  await c.run({ eachMessage: async ({ message }) => { got.push(String(message.value)); } });
  while (!end) await new Promise((r) => setTimeout(r, 100));
  await c.disconnect();
  return got;
}

(async () => {
  const out = {};
  const admin = kafka.admin();
  await admin.connect();
  out.created = await admin.createTopics({
    topics: [{ topic: "jsa", numPartitions: 2, configEntries: [{ name: "retention.ms", value: "3600000" }] }],
  });
  // validateOnly creates nothing; kafkajs then waits for the leaders of a topic that does not
  // exist unless told not to (as against Kafka).
  await admin.createTopics({ validateOnly: true, waitForLeaders: false, topics: [{ topic: "jsv" }] });
  await admin.createPartitions({ topicPartitions: [{ topic: "jsa", count: 3 }] });
  await admin.alterConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: "jsa", configEntries: [{ name: "retention.ms", value: "7200000" }] }],
  });
  const conf = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: "jsa", configNames: ["retention.ms"] }],
  });
  out.retention = conf.resources[0].configEntries[0].configValue;
  out.partitions = (await admin.fetchTopicMetadata({ topics: ["jsa"] })).topics[0].partitions.length;

  const p = kafka.producer({ transactionalId: "js-tx", maxInFlightRequests: 1, idempotent: true });
  await p.connect();
  let t = await p.transaction();
  await t.send({ topic: "jstx", compression: CompressionTypes.GZIP, messages: [{ value: "c0" }, { value: "c1" }] });
  await t.commit();
  t = await p.transaction();
  await t.send({ topic: "jstx", messages: [{ value: "aborted" }] });
  await t.abort();
  t = await p.transaction();
  await t.send({ topic: "jstx", messages: [{ value: "c2" }] });
  await t.sendOffsets({ consumerGroupId: "jstx-g", topics: [{ topic: "jstx", partitions: [{ partition: 0, offset: "1" }] }] });
  await t.commit();
  await p.disconnect();
  out.committed = await readAll(false, 3);
  out.uncommitted = await readAll(true, 4);
  out.txOffsets = (await admin.fetchOffsets({ groupId: "jstx-g", topics: ["jstx"] }))[0].partitions.map((x) => x.offset);
  out.byTime = (await admin.fetchTopicOffsetsByTimestamp("jstx", 0)).map((x) => x.offset);
  out.ends = (await admin.fetchTopicOffsets("jstx")).map((x) => [x.low, x.high]);
  await admin.deleteTopicRecords({ topic: "jstx", partitions: [{ partition: 0, offset: "2" }] });
  out.afterDelete = (await admin.fetchTopicOffsets("jstx")).map((x) => [x.low, x.high]);
  out.groups = (await admin.listGroups()).groups.map((g) => g.groupId).sort();
  await admin.deleteGroups(["jstx-g"]);
  out.groupsAfter = (await admin.listGroups()).groups.map((g) => g.groupId).sort();
  await admin.deleteTopics({ topics: ["jsa"] });
  out.topics = (await admin.listTopics()).sort();
  out.cluster = await admin.describeCluster();
  await admin.disconnect();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e.name, e.type || "", e.message); process.exit(1); });
