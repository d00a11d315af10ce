/* Split from records.c (and read after it into one translation unit wherever records.c is: the
 * build scripts list edgebus/_cbuild.py RECORDS), so its includes, CRC macros and record checks
 * (check_record, utf8_valid) are in scope here. */

/* --- Kafka record batches v2 (docs/FORMAT.md section 9): the Kafka listener's conversions ------ */

/* A zigzag varint of at most 10 bytes at *p (before end): 0, or -1 when cut short or too long. */
static inline int kvarint(const unsigned char **p, const unsigned char *end, int64_t *out) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return -1;
        unsigned char c = *(*p)++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = (int64_t)(r >> 1) ^ -(int64_t)(r & 1);
            return 0;
        }
    }
    return -1;
}

static inline unsigned char *put_kvarint(unsigned char *o, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z >= 0x80) {
        *o++ = (unsigned char)(z | 0x80);
        z >>= 7;
    }
    *o++ = (unsigned char)z;
    return o;
}

/* Kafka records (the records section of a v2 batch, decompressed: recs, n bytes, count records)
 * as one edgebus batch in out (cap bytes): the header written but for base_offset, append_time,
 * length and crc (bytes 0-23, which the caller packs), then the records (FORMAT.md 2.2, 2.3).
 * state[0] (the input position) and state[1] (the record index) say where to start and are
 * advanced past the records converted: the batch ends before a record that would take it past
 * max_len bytes, so a caller converts a Kafka batch into several edgebus batches within the
 * topic's max_message_bytes by calling until state[1] == count. Offset deltas must be the record
 * indexes (an edgebus batch holds dense offsets); the base sequence of the piece is base_sequence
 * plus its first index (when base_sequence >= 0). Returns the batch's length, or: -1 a varint cut
 * short or too long, -2 a record length that does not fit, -3 an offset delta that is not the
 * record's index, -4 a key/value/header of a bad length, -5 fields that do not fill their record,
 * -6 bytes after the last record, -7 too many headers, -8 a record that does not fit cap (cap
 * must leave room for max_len plus three times the largest record), -9 one record alone makes a
 * batch larger than max_len. */
int64_t eb_kafka_to_edgebus(const char *recs, uint64_t n, uint32_t count, int64_t base_ts,
                            int64_t producer_id, int16_t producer_epoch, int32_t base_sequence,
                            char *out, uint64_t cap, uint64_t max_len, uint64_t *state) {
    const unsigned char *p = (const unsigned char *)recs + state[0], *end = (const unsigned char *)recs + n;
    unsigned char *o = (unsigned char *)out + 64, *oend = (unsigned char *)out + cap;
    uint32_t first = (uint32_t)state[1], i;
    int64_t first_ts = base_ts, max_ts = base_ts;
    for (i = first; i < count; i++) {
        int64_t len, tsd, offd, kl, vl, nh;
        const unsigned char *rec_in = p;
        if (kvarint(&p, end, &len)) return -1;
        if (len < 6 || len > end - p) return -2;
        const unsigned char *stop = p + len;
        /* An edgebus record takes at most 16 bytes more than the Kafka one, plus 4 per header
         * (each at least 2 Kafka bytes), so len * 3 + 24 always holds it. */
        if ((uint64_t)(oend - o) < (uint64_t)len * 3 + 24) return -8;
        p++; /* attributes: unused in v2 records */
        if (kvarint(&p, stop, &tsd) || kvarint(&p, stop, &offd)) return -1;
        if (offd != (int64_t)i) return -3;
        int64_t ts = base_ts + tsd, prev_max = max_ts;
        if (i == first) first_ts = max_ts = ts;
        else if (ts > max_ts) max_ts = ts;
        unsigned char *rec = o;
        o += 4;
        memcpy(o, &ts, 8);
        o += 8;
        if (kvarint(&p, stop, &kl)) return -1;
        if (kl < -1 || kl > stop - p) return -4;
        int32_t k32 = (int32_t)kl;
        memcpy(o, &k32, 4);
        o += 4;
        if (kl > 0) { memcpy(o, p, (size_t)kl); o += kl; p += kl; }
        if (kvarint(&p, stop, &vl)) return -1;
        if (vl < -1 || vl > stop - p) return -4;
        int32_t v32 = (int32_t)vl;
        memcpy(o, &v32, 4);
        o += 4;
        if (vl > 0) { memcpy(o, p, (size_t)vl); o += vl; p += vl; }
        if (kvarint(&p, stop, &nh)) return -1;
        if (nh < 0 || nh > 0xffff) return -7;
        uint16_t nh16 = (uint16_t)nh;
        memcpy(o, &nh16, 2);
        o += 2;
        for (int64_t h = 0; h < nh; h++) {
            int64_t hk, hv;
            if (kvarint(&p, stop, &hk)) return -1;
            if (hk < 0 || hk > 0xffff || hk > stop - p) return -4;
            uint16_t hk16 = (uint16_t)hk;
            memcpy(o, &hk16, 2);
            o += 2;
            memcpy(o, p, (size_t)hk);
            o += hk;
            p += hk;
            if (kvarint(&p, stop, &hv)) return -1;
            if (hv < -1 || hv > stop - p) return -4;
            int32_t hv32 = (int32_t)hv;
            memcpy(o, &hv32, 4);
            o += 4;
            if (hv > 0) { memcpy(o, p, (size_t)hv); o += hv; p += hv; }
        }
        if (p != stop) return -5;
        if ((uint64_t)(o - (unsigned char *)out) > max_len) { /* the piece ends before it */
            if (i == first) return -9;
            o = rec;
            p = rec_in;
            max_ts = prev_max;
            break;
        }
        uint32_t rlen = (uint32_t)(o - rec - 4);
        memcpy(rec, &rlen, 4);
    }
    if (i == count && p != end) return -6;
    state[0] = (uint64_t)(p - (const unsigned char *)recs);
    state[1] = i;
    /* The header from magic on (FORMAT.md 2.1); 0-23 are the caller's. */
    unsigned char *h = (unsigned char *)out;
    uint16_t zero16 = 0;
    uint32_t piece = i - first;
    int32_t seq = base_sequence >= 0 ? (int32_t)((uint32_t)base_sequence + first) : base_sequence;
    h[24] = 1; /* magic */
    h[25] = 0; /* attributes: stored uncompressed */
    memcpy(h + 26, &zero16, 2);
    memcpy(h + 28, &piece, 4);
    memcpy(h + 32, &first_ts, 8);
    memcpy(h + 40, &max_ts, 8);
    memcpy(h + 48, &producer_id, 8);
    memcpy(h + 56, &seq, 4);
    memcpy(h + 60, &producer_epoch, 2);
    memcpy(h + 62, &zero16, 2);
    return (int64_t)(o - (unsigned char *)out);
}

/* The count records of an edgebus batch (the bytes after its header: b, length bytes) as the
 * records section of a Kafka v2 batch whose base timestamp is base_ts, into out (cap bytes, at
 * least 2 * length + 16 * count). Returns the bytes written, -1 for a record that does not
 * check (check_record), -8 when out is too small. */
int64_t eb_edgebus_to_kafka(const char *b, uint64_t length, uint32_t count, int64_t base_ts,
                            char *out, uint64_t cap) {
    unsigned char *o = (unsigned char *)out, *oend = o + cap;
    unsigned char tmp[48];
    uint64_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        eb_rec r;
        if (check_record(b, length, pos, &r) != 0) return -1;
        uint64_t rest = r.end - pos;
        if ((uint64_t)(oend - o) < 2 * rest + 48) return -8;
        /* The record's body first, after room for its length varint (at most 5 bytes). */
        unsigned char *body = o + 5, *q = body;
        *q++ = 0; /* attributes */
        q = put_kvarint(q, r.ts - base_ts);
        q = put_kvarint(q, (int64_t)i);
        q = put_kvarint(q, r.klen);
        if (r.klen > 0) { memcpy(q, b + r.kpos, (size_t)r.klen); q += r.klen; }
        q = put_kvarint(q, r.vlen);
        if (r.vlen > 0) { memcpy(q, b + r.vpos, (size_t)r.vlen); q += r.vlen; }
        q = put_kvarint(q, r.hcount);
        uint64_t hp = r.hpos + 2; /* hpos is the u16 count's */
        for (uint32_t h = 0; h < r.hcount; h++) {
            uint16_t kl;
            int32_t vl;
            memcpy(&kl, b + hp, 2);
            q = put_kvarint(q, kl);
            memcpy(q, b + hp + 2, kl);
            q += kl;
            hp += 2 + (uint64_t)kl;
            memcpy(&vl, b + hp, 4);
            hp += 4;
            q = put_kvarint(q, vl);
            if (vl > 0) { memcpy(q, b + hp, (size_t)vl); q += vl; hp += (uint64_t)vl; }
        }
        int64_t blen = q - body;
        unsigned char *e = put_kvarint(tmp, blen);
        size_t vn = (size_t)(e - tmp);
        memmove(o + vn, body, (size_t)blen);
        memcpy(o, tmp, vn);
        o += vn + (uint64_t)blen;
        pos = r.end;
    }
    return (int64_t)(o - (unsigned char *)out);
}
