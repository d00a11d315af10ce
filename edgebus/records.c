/* edgebus record-batch helpers: the per-record loops that cost about a microsecond each in Python
 * (encode records with no keys, check and index a batch's records, write the struct format that
 * unpacks them). The layouts are docs/FORMAT.md section 2 (the record batch); edgebus/records.py
 * wraps them and edgebus/batch.py, the specification, falls back to Python when this is not built.
 * No shared memory here: the ring is edgebus/shm/ring.c, a separate module.
 */
#include <stdint.h>
#include <string.h>
#ifdef EB_HAVE_ZLIB /* set by _records_build.py when zlib.h is there (python3-dev pulls it in) */
#include <zlib.h>
/* The batch CRC (zlib's CRC-32 of bytes [24, n)): libdeflate's where its header was there at
 * build time (the same CRC with carry-less multiplication, PCLMUL on x86-64 and PMULL/CRC32 on
 * 64-bit ARM: 0.04 against zlib 1.2's 0.21 us per KiB here), else zlib's. Three of them per
 * record (producer, supervisor, consumer) were about a sixth of a 1 KiB record's CPU
 * (bench/results/issue16-lat27.md). */
/* zlib takes a uInt length: a batch is at most 16 MiB, far below it */
#define EB_ZCRC32(p, n) ((uint32_t)crc32(0L, (const Bytef *)(p), (uInt)(n)))
#ifdef EB_HAVE_LIBDEFLATE
#include <libdeflate.h>
/* Only for batches of EB_DEFLATE_MIN bytes or more: on small ones (a paced one-record batch)
 * libdeflate's cost a paced consumer ~12 us more per message at 1,000/s than zlib's
 * (bench/results/issue16-crc-s27.md), where a large batch's bytes are what count. */
#define EB_DEFLATE_MIN 4096
#define EB_CRC32(p, n) ((size_t)(n) >= EB_DEFLATE_MIN \
                        ? (uint32_t)libdeflate_crc32(0, (p), (size_t)(n)) : EB_ZCRC32(p, n))
#else
#define EB_CRC32(p, n) EB_ZCRC32(p, n)
#endif
#endif

/* --- record batches (docs/FORMAT.md section 2): per-record work that is slow in Python --------- */

/* Encode n records with no key and no headers, all with timestamp ts, whose values lie back to
 * back in vals with lengths lens (as the record layout: u32 length of the rest | i64 timestamp |
 * i32 key length -1 | i32 value length | value | u16 header count 0). Returns bytes written
 * (22 * n + sum of lens); out must hold that many. */
int64_t eb_encode_values(char *out, const char *vals, const uint32_t *lens, uint32_t n, int64_t ts) {
    char *o = out;
    const char *v = vals;
    int32_t nokey = -1;
    uint16_t nohdr = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t vl = lens[i];
        uint32_t rest = 8 + 4 + 4 + vl + 2;
        int32_t vl32 = (int32_t)vl;
        memcpy(o, &rest, 4);
        memcpy(o + 4, &ts, 8);
        memcpy(o + 12, &nokey, 4);
        memcpy(o + 16, &vl32, 4);
        memcpy(o + 20, v, vl);
        memcpy(o + 20 + vl, &nohdr, 2);
        o += 22 + (uint64_t)vl;
        v += vl;
    }
    return o - out;
}

/* One record's fields, as found by check_record. */
typedef struct {
    int64_t ts;
    uint64_t kpos, vpos, hpos, end; /* end: the byte after the record */
    int32_t klen, vlen;             /* -1 = null */
    uint16_t hcount;
} eb_rec;

/* Check the record at pos of a batch of length bytes (docs/FORMAT.md 2.2, 2.3) and fill *r.
 * 0 = well formed; -1 = lengths inconsistent with each other or with the batch. Header keys are
 * not checked for UTF-8 here: the Python side decodes them (and raises) when it builds headers. */
static inline int check_record(const char *b, uint64_t length, uint64_t pos, eb_rec *r) {
    uint32_t rlen;
    uint16_t hcount;
    int32_t klen, vlen;
    if (pos + 16 > length) return -1;
    memcpy(&rlen, b + pos, 4);
    memcpy(&r->ts, b + pos + 4, 8);
    memcpy(&klen, b + pos + 12, 4);
    uint64_t rend = pos + 4 + (uint64_t)rlen;
    if (rend > length || klen < -1) return -1;
    uint64_t p = pos + 16;
    r->kpos = p;
    if (klen > 0) p += (uint64_t)klen;
    if (p + 4 > rend) return -1;
    memcpy(&vlen, b + p, 4);
    p += 4;
    if (vlen < -1) return -1;
    r->vpos = p;
    if (vlen > 0) p += (uint64_t)vlen;
    if (p + 2 > rend) return -1;
    memcpy(&hcount, b + p, 2);
    r->hpos = p;
    p += 2;
    for (uint32_t h = 0; h < hcount; h++) { /* only checks that the headers fit */
        uint16_t hk;
        int32_t hv;
        if (p + 2 > rend) return -1;
        memcpy(&hk, b + p, 2);
        p += 2 + hk;
        if (p + 4 > rend) return -1;
        memcpy(&hv, b + p, 4);
        p += 4;
        if (hv < -1) return -1;
        if (hv > 0) p += (uint64_t)hv;
    }
    if (p != rend) return -1;
    r->klen = klen;
    r->vlen = vlen;
    r->hcount = hcount;
    r->end = rend;
    return 0;
}

#define EB_IDX_FIELDS 7
/* Index the records of one batch (its bytes from offset 0, length bytes, count records after the
 * 64-byte header) into out, EB_IDX_FIELDS int64 per record: timestamp, key position, key length
 * (-1 = null), value position, value length (-1 = null), position of the headers' u16 count,
 * header count. Returns count, or -(1 + i) when record i is malformed (lengths inconsistent with
 * each other or with the batch), so the caller can name it. */
int64_t eb_index_records(const char *b, uint64_t length, uint32_t count, int64_t *out) {
    uint64_t pos = 64;
    eb_rec r;
    for (uint32_t i = 0; i < count; i++) {
        if (check_record(b, length, pos, &r)) return -(int64_t)i - 1;
        int64_t *o = out + (uint64_t)i * EB_IDX_FIELDS;
        o[0] = r.ts;
        o[1] = (int64_t)r.kpos;
        o[2] = r.klen;
        o[3] = (int64_t)r.vpos;
        o[4] = r.vlen;
        o[5] = (int64_t)r.hpos;
        o[6] = r.hcount;
        pos = r.end;
    }
    if (pos != length) return -(int64_t)count - 1;
    return count;
}

/* Strict UTF-8 as Python's decoder (errors="strict") accepts it: no overlong forms, no surrogates,
 * nothing above U+10FFFF. 1 = valid. */
static int utf8_valid(const unsigned char *s, uint64_t n) {
    uint64_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        uint32_t cp, min;
        uint64_t k;
        if (c >= 0xC2 && c <= 0xDF) { cp = c & 0x1F; k = 1; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; k = 2; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { cp = c & 0x07; k = 3; min = 0x10000; }
        else return 0;
        if (n - i <= k) return 0;
        for (uint64_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += k + 1;
    }
    return 1;
}

/* The supervisor's produce-time check of one batch (its bytes from offset 0, length bytes, count
 * records after the 64-byte header): every record as check_record checks it, and every header
 * key as UTF-8, which is all the consumer's decoder needs, so a batch that passes decodes.
 * Writes nothing. Returns count, or -(1 + i) when record i is malformed (-(1 + count) for bytes
 * after the last record). */
int64_t eb_check_records(const char *b, uint64_t length, uint32_t count) {
    uint64_t pos = 64;
    eb_rec r;
    for (uint32_t i = 0; i < count; i++) {
        if (check_record(b, length, pos, &r)) return -(int64_t)i - 1;
        uint64_t p = r.hpos + 2; /* check_record checked that every header fits */
        for (uint32_t h = 0; h < r.hcount; h++) {
            uint16_t hk;
            int32_t hv;
            memcpy(&hk, b + p, 2);
            if (!utf8_valid((const unsigned char *)b + p + 2, hk)) return -(int64_t)i - 1;
            p += 2 + hk;
            memcpy(&hv, b + p, 4);
            p += 4 + (hv > 0 ? (uint64_t)hv : 0);
        }
        pos = r.end;
    }
    if (pos != length) return -(int64_t)count - 1;
    return count;
}

/* The supervisor's whole produce-time check of one batch of n bytes, in one call: what
 * edgebus.batch._checked_header checks of the 64-byte header (length field == n <= max_bytes,
 * magic 1, no codec, count >= 1, the compacted-away form only when compacted_ok and then with no
 * records, else count * 22 <= n - 64), its CRC (zlib's crc32 of bytes [24, n)), then every record
 * as eb_check_records. Returns the record count when all hold; EB_CHECK_NO_CRC when all but the
 * CRC hold and this build has no zlib (the caller computes it); EB_CHECK_FAILED (0) for anything
 * wrong: the caller runs the Python checks, which say what. The header is read with memcpy
 * (little-endian hosts, as the ring and the rest of this file). */
#define EB_CHECK_FAILED 0
#define EB_CHECK_NO_CRC -1
int64_t eb_check_batch(const char *b, uint64_t n, uint64_t max_bytes, int compacted_ok) {
    uint32_t length, crc, count;
    uint8_t magic, attrs;
    if (n < 64) return EB_CHECK_FAILED;
    memcpy(&length, b + 16, 4);
    memcpy(&crc, b + 20, 4);
    memcpy(&magic, b + 24, 1);
    memcpy(&attrs, b + 25, 1);
    memcpy(&count, b + 28, 4);
    if (length != n || n > max_bytes || magic != 1 || (attrs & 0x07) || count < 1)
        return EB_CHECK_FAILED;
    if (attrs & 0x08) {
        if (!compacted_ok || n != 64) return EB_CHECK_FAILED;
    } else if ((uint64_t)count * 22 > n - 64) {
        return EB_CHECK_FAILED;
    }
#ifdef EB_HAVE_ZLIB
    if (EB_CRC32(b + 24, n - 24) != crc) return EB_CHECK_FAILED;
#endif
    if (!(attrs & 0x08) && eb_check_records(b, n, count) < 0) return EB_CHECK_FAILED;
#ifdef EB_HAVE_ZLIB
    return count;
#else
    return EB_CHECK_NO_CRC;
#endif
}

/* A producer's one-record PRODUCE request (docs/FORMAT.md 7.1 request header, PRODUCE body 7.5,
 * record batch 2.1, record 2.2), written whole into out: what edgebus.client.producer builds with
 * batch.encode_record, batch.batch_parts, fastpath.produce.produce_body_parts and the frame
 * header, in one call (a send() at 1,000/s spent most of its CPU in those layers' Python).
 * prefix: the body's bytes before the batch length (topic wire string, partition, acks; cached by
 * fastpath.produce). key/val: NULL with length -1 for null. Returns the frame's bytes; -1 when
 * out (cap bytes) is too small; -2 when this build has no zlib (the caller builds it in Python).
 * tests/test_produce_frame.py compares it with the Python layers byte for byte. */
int64_t eb_produce_frame(char *out, uint64_t cap, const char *prefix, uint32_t plen, const char *key,
                         int32_t klen, const char *val, int32_t vlen, int64_t ts, uint32_t corr,
                         uint16_t api) {
#ifndef EB_HAVE_ZLIB
    return -2;
#else
    uint64_t kl = klen > 0 ? (uint64_t)klen : 0, vl = vlen > 0 ? (uint64_t)vlen : 0;
    uint64_t rec = 22 + kl + vl;         /* record_length .. header count */
    uint64_t batch = 64 + rec;           /* one batch of one record */
    uint64_t body = plen + 4 + batch;    /* prefix, batch length, batch */
    uint64_t frame = 12 + body;          /* request header (length, api, version, correlation) */
    if (frame > cap || batch > 0x7FFFFFFF) return -1;
    char *o = out;
    uint32_t u32 = (uint32_t)(8 + body);
    uint16_t u16 = api;
    memcpy(o, &u32, 4);
    memcpy(o + 4, &u16, 2);
    memset(o + 6, 0, 2);
    memcpy(o + 8, &corr, 4);
    o += 12;
    memcpy(o, prefix, plen);
    o += plen;
    int32_t i32 = (int32_t)batch;
    memcpy(o, &i32, 4);
    o += 4;
    char *b = o; /* the batch: base_offset, append_time (0: the supervisor stamps them), length, crc */
    memset(b, 0, 16);
    u32 = (uint32_t)batch;
    memcpy(b + 16, &u32, 4);
    b[24] = 1; /* magic */
    b[25] = 0; /* attributes */
    memset(b + 26, 0, 2);
    u32 = 1;
    memcpy(b + 28, &u32, 4);
    memcpy(b + 32, &ts, 8); /* first timestamp */
    memcpy(b + 40, &ts, 8); /* max timestamp */
    int64_t pid = -1;
    int32_t seq = -1;
    int16_t epoch = -1;
    memcpy(b + 48, &pid, 8);
    memcpy(b + 56, &seq, 4);
    memcpy(b + 60, &epoch, 2);
    memset(b + 62, 0, 2);
    char *r = b + 64;
    u32 = (uint32_t)(rec - 4);
    memcpy(r, &u32, 4);
    memcpy(r + 4, &ts, 8);
    memcpy(r + 12, &klen, 4);
    r += 16;
    if (kl) memcpy(r, key, kl);
    r += kl;
    memcpy(r, &vlen, 4);
    r += 4;
    if (vl) memcpy(r, val, vl);
    r += vl;
    memset(r, 0, 2);
    u32 = EB_CRC32(b + 24, batch - 24);
    memcpy(b + 20, &u32, 4);
    return (int64_t)frame;
#endif
}

#define EB_PLAN_FIELDS 7
#define EB_FMT_KEYS 1   /* eb_format_records flags: unpack each record's key, */
#define EB_FMT_VALUES 2 /* and its value */
/* The format writer, below. */
int64_t eb_format_records(const char *b, uint64_t length, uint64_t pos, uint32_t n, int flags,
                          char *fmt, uint64_t cap, uint64_t *next_pos);

/* The first step of a consumer's decode of one batch (its bytes from offset 0, length bytes,
 * count records after the 64-byte header), keeping records skip..count-1: check every record
 * exactly as eb_index_records does, then write the struct format of eb_format_records for the
 * first min(count - skip, chunk) kept records, with EB_FMT_KEYS when some kept record has a key
 * and EB_FMT_VALUES when some has a value. plan (EB_PLAN_FIELDS int64) gets: byte position of
 * record skip, records formatted, position after them, null keys, null values and records with
 * headers among all kept records, and the flags used. Returns the format's length (0 when no
 * record is kept), -(1 + i) when record i is malformed, or -(2 + count) when fmt is too small. */
int64_t eb_plan_records(const char *b, uint64_t length, uint32_t count, uint32_t skip, uint32_t chunk,
                        char *fmt, uint64_t cap, int64_t *plan) {
    uint64_t pos = 64, first = length;
    int64_t nk = 0, nv = 0, nh = 0;
    eb_rec r;
    for (uint32_t i = 0; i < count; i++) {
        if (check_record(b, length, pos, &r)) return -(int64_t)i - 1;
        if (i >= skip) {
            if (i == skip) first = pos;
            nk += r.klen < 0;
            nv += r.vlen < 0;
            nh += r.hcount != 0;
        }
        pos = r.end;
    }
    if (pos != length) return -(int64_t)count - 1;
    uint32_t kept = skip < count ? count - skip : 0;
    uint32_t n = kept < chunk ? kept : chunk;
    int flags = (nk < kept ? EB_FMT_KEYS : 0) | (nv < kept ? EB_FMT_VALUES : 0);
    uint64_t next = first;
    int64_t flen = 0;
    if (n) {
        flen = eb_format_records(b, length, first, n, flags, fmt, cap, &next);
        if (flen < 0) return -(int64_t)count - 2;
    }
    plan[0] = (int64_t)first;
    plan[1] = n;
    plan[2] = (int64_t)next;
    plan[3] = nk;
    plan[4] = nv;
    plan[5] = nh;
    plan[6] = flags;
    return flen;
}

/* Largest format text one record can need when every length is below 10^9 (a batch is at most
 * MAX_BATCH_BYTES): three pads "<n>x", "q", and two fields "<n>s", each number at most 9 digits
 * (3 * 10 + 1 + 2 * 10 = 51). */
#define EB_FMT_PER_RECORD 56

static inline char *put_count(char *o, uint64_t n, char code) {
    char tmp[24];
    int k = 0;
    do { tmp[k++] = (char)('0' + n % 10); n /= 10; } while (n);
    while (k) *o++ = tmp[--k];
    *o++ = code;
    return o;
}

/* A struct-module format ("<" then codes, as Python's struct.Struct reads it) that unpacks the n
 * records starting at byte pos (already checked by eb_plan_records) from that position: per
 * record the timestamp ("q"), then the key ("<klen>s", "0s" for a null key) when flags has
 * EB_FMT_KEYS, then the value likewise with EB_FMT_VALUES; everything else is skipped with pad
 * bytes ("<n>x"; trailing pad is left out, so the format never reaches past the last field).
 * Python builds n records' fields in one unpack call. Returns the format's length and sets
 * *next_pos to the position after the n records; -1 when fmt (cap bytes, at least
 * EB_FMT_PER_RECORD * n + 2) is too small or a record is malformed. */
int64_t eb_format_records(const char *b, uint64_t length, uint64_t pos, uint32_t n, int flags,
                          char *fmt, uint64_t cap, uint64_t *next_pos) {
    if (cap < (uint64_t)EB_FMT_PER_RECORD * n + 2 || length >= 1000000000u) return -1;
    char *o = fmt;
    uint64_t pad = 0;
    eb_rec r;
    *o++ = '<';
    for (uint32_t i = 0; i < n; i++) {
        if (check_record(b, length, pos, &r)) return -1;
        o = put_count(o, pad + 4, 'x'); /* what is left of the previous record, record_length */
        *o++ = 'q';
        pad = 4; /* key_length */
        uint64_t kl = r.klen > 0 ? (uint64_t)r.klen : 0, vl = r.vlen > 0 ? (uint64_t)r.vlen : 0;
        if (flags & EB_FMT_KEYS) {
            o = put_count(o, pad, 'x');
            o = put_count(o, kl, 's');
            pad = 0;
        } else {
            pad += kl;
        }
        pad += 4; /* value_length */
        if (flags & EB_FMT_VALUES) {
            o = put_count(o, pad, 'x');
            o = put_count(o, vl, 's');
            pad = 0;
        } else {
            pad += vl;
        }
        pad += r.end - (r.vpos + vl); /* header count and headers */
        pos = r.end;
    }
    *next_pos = pos;
    return o - fmt;
}

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
