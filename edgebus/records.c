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
