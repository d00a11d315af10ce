/* edgebus record-batch helpers: the per-record loops that cost about a microsecond each in Python
 * (encode records with no keys, check and index a batch's records, write the struct format that
 * unpacks them). The layouts are docs/FORMAT.md section 2 (the record batch); edgebus/records.py
 * wraps them and edgebus/batch.py, the specification, falls back to Python when this is not built.
 * No shared memory here: the ring is edgebus/shm/ring.c, a separate module.
 */
#include <stdint.h>
#include <string.h>

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
