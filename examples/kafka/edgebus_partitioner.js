// A kafkajs partitioner that puts a key where edgebus's own Producer, kcat and librdkafka
// (confluent-kafka) put it: CRC-32 (IEEE) of the key bytes, modulo the partition count.
// kafkajs's default (murmur2, as the Java client) sends a key to another partition, so one key
// written by both kinds of producer would be split over two partitions (docs/KAFKA.md, "Keys
// and partitions"). Usage:
//   const { EdgebusPartitioner } = require("./edgebus_partitioner");
//   const producer = kafka.producer({ createPartitioner: EdgebusPartitioner });
// (Node 20.15 and newer have zlib.crc32; this table keeps it working on Debian 12's Node 18.)

const TABLE = Array.from({ length: 256 }, (_, i) => {
  let c = i;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const EdgebusPartitioner = () => {
  let next = 0; // records without a key have no partition to agree on: round robin
  return ({ partitionMetadata, message }) => {
    const n = partitionMetadata.length;
    if (message.key === null || message.key === undefined) return next++ % n;
    return crc32(Buffer.from(message.key)) % n;
  };
};

module.exports = { EdgebusPartitioner, crc32 };
