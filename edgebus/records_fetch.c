/* Split from records.c (and read after it into one translation unit wherever records.c is: the
 * build scripts list edgebus/_cbuild.py RECORDS), so its includes, CRC macros and record checks
 * (check_record, utf8_valid) are in scope here. */

/* --- the consumer's fast path: a whole one-partition FETCH answer in one call ------------------ */

#define EB_FETCHED_FIELDS 5
/* A FETCH response body (docs/FORMAT.md FETCH: the bytes after the response header) that answers
 * exactly the one partition named by `want` (wlen bytes: i32 partition count 1, the topic's wire
 * str, i32 partition) with no error: check every whole batch of its records chunk as
 * edgebus.batch.decode_batch does (header fields, CRC, every record; a trailing partial batch is
 * left out as iter_batches leaves it) and write one struct format ("<" then codes) that, unpacked
 * from the body's first byte, gives each record at offset >= min_offset: its timestamp ("q"),
 * then its key ("<n>s") when keyed, then its value. out (EB_FETCHED_FIELDS int64): high
 * watermark, log start offset, the offset after the last whole batch, records kept, the offset
 * of the first kept record. Returns the format's length (> 0) when at least one record is kept,
 * the kept records' offsets are consecutive, none has headers or a null value, and their keys
 * are all null (no key fields) or all present. Anything else (an error code, another partition,
 * damage, no record kept, headers, nulls, gaps, more than max_records records, fmt too small,
 * a build without zlib) returns 0: the caller decodes the answer the general way, which says
 * what is wrong. Little-endian hosts, as the rest of this file. */
int64_t eb_plan_fetched(const char *b, uint64_t n, const char *want, uint64_t wlen,
                        int64_t min_offset, uint32_t max_records, char *fmt, uint64_t cap,
                        int64_t *out) {
#ifndef EB_HAVE_ZLIB
    return 0;
#else
    int16_t err;
    uint16_t mlen;
    int32_t rl;
    int64_t hw, ls;
    if (n < wlen + 24 || n >= 1000000000u || memcmp(b, want, wlen) != 0) return 0;
    uint64_t p = wlen;
    memcpy(&err, b + p, 2);
    memcpy(&mlen, b + p + 2, 2);
    memcpy(&hw, b + p + 4, 8);
    memcpy(&ls, b + p + 12, 8);
    memcpy(&rl, b + p + 20, 4);
    p += 24;
    if (err != 0 || mlen != 0 || rl < 0 || p + (uint64_t)rl != n) return 0;
    uint64_t end = n, cur = 0; /* cur: the body position after the last field the format takes */
    int64_t next = -1, first = -1, expect = -1, kept = 0;
    int keyed = -1; /* -1: no record kept yet; 0: keys all null; 1: keys all present */
    char *o = fmt, *lim = fmt + cap;
    *o++ = '<';
    while (end - p >= 64) {
        int64_t base;
        uint32_t length, crc, count;
        uint8_t magic, attrs;
        memcpy(&base, b + p, 8);
        memcpy(&length, b + p + 16, 4);
        memcpy(&crc, b + p + 20, 4);
        memcpy(&magic, b + p + 24, 1);
        memcpy(&attrs, b + p + 25, 1);
        memcpy(&count, b + p + 28, 4);
        if (length < 64) return 0; /* damage: iter_batches raises */
        if (p + length > end) break; /* a trailing partial batch */
        if (length > 16u * 1024 * 1024 || magic != 1 || (attrs & 0x07) || count < 1) return 0;
        if (attrs & 0x08) {
            if (length != 64) return 0;
        } else if ((uint64_t)count * 22 > length - 64) {
            return 0;
        }
        const char *bb = b + p;
        if (EB_CRC32(bb + 24, length - 24) != crc) return 0;
        if (!(attrs & (0x08 | 0x20))) { /* compacted-away and control batches hold no records */
            uint64_t pos = 64;
            eb_rec r;
            for (uint32_t i = 0; i < count; i++) {
                if (check_record(bb, length, pos, &r)) return 0;
                int64_t off = base + (int64_t)i;
                if (off >= min_offset) {
                    if (r.hcount || r.vlen < 0) return 0;
                    int k = r.klen >= 0;
                    if (keyed < 0) {
                        keyed = k;
                        first = off;
                    } else if (keyed != k || off != expect) {
                        return 0;
                    }
                    if (++kept > max_records || lim - o < EB_FMT_PER_RECORD + 2) return 0;
                    uint64_t at = p + pos + 4; /* the timestamp */
                    o = put_count(o, at - cur, 'x');
                    *o++ = 'q';
                    cur = at + 8;
                    if (k) {
                        o = put_count(o, r.kpos + p - cur, 'x');
                        o = put_count(o, (uint64_t)r.klen, 's');
                        cur = p + r.kpos + (uint64_t)r.klen;
                    }
                    o = put_count(o, r.vpos + p - cur, 'x');
                    o = put_count(o, (uint64_t)r.vlen, 's');
                    cur = p + r.vpos + (uint64_t)r.vlen;
                    expect = off + 1;
                }
                pos = r.end;
            }
            if (pos != length) return 0;
        }
        next = base + (int64_t)count;
        p += length;
    }
    if (!kept) return 0;
    out[0] = hw;
    out[1] = ls;
    out[2] = next;
    out[3] = kept;
    out[4] = first;
    return o - fmt;
#endif
}
