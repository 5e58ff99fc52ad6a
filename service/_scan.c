/* The JSON line scanner behind the writer's mapping and the ingest tier's validation.
 *
 * map_lines (service/sink/native.py): the Python mapping (service/sink/columns.py, held to
 * mapping.ColumnBuilder) parses every line into a dict, pops the mapped keys and dumps the
 * rest with orjson: ~3 us a line in Python objects. This does the same in one pass over the
 * bytes, without a Python object per line, for lines already written the way orjson writes
 * JSON (what agents and our own ingest send):
 *
 *   - a line is taken only if re-emitting its bytes gives exactly orjson.dumps(orjson.loads):
 *     no duplicate keys at any depth, no \u or \/ escapes, integers of at most 18 digits,
 *     no "-0", decimals without exponent or trailing zeros, in their shortest round-trip
 *     form (any of up to 15 significant digits; 16-17 when strtod and snprintf agree) and
 *     inside [1e-5, 1e15) (where orjson prints fixed notation); whitespace outside
 *     strings is dropped, as orjson drops it. A number taken as the event time may be
 *     written any way (its column is parsed from the text);
 *   - every other line (invalid JSON included) is marked for the Python path, which decides
 *     and reports exactly as before. Never guessing keeps the output byte-identical.
 *
 *   Mapped-key choice follows ColumnBuilder: groups in order, first present name wins, a key
 *   taken by one group is gone for the next; a dotted name whose head is a present object
 *   sends the line to Python (the match depends on the value). The time key is taken
 *   tentatively: Python parses the times and sends records whose time did not parse (or fell
 *   outside the window) back to its own path, where the key stays in `attributes`.
 *
 * zoned_times (service/sink/native.py): the µs of the time column's zoned RFC 3339 strings,
 * exactly those event_time._ZONED admits and fromisoformat reads (tests/sink/test_scan_times.py);
 * the others are left to event_time.
 *
 * check_lines (service/ingest/lines.py): which NDJSON lines orjson certainly reads as a
 * non-empty object; the others (and anything it is unsure of: \u escapes, exponents past two
 * digits, nesting past 64) go to orjson, which names the reason.
 *
 * Numbers: orjson refuses one that overflows a double (1e309, 1<210 zeros>e99), so the
 * digit count and the exponent are bounded together: a number whose leading digit's decimal
 * exponent (digits before the point plus the written exponent) is past +-300, or with more
 * than 300 digits, or an exponent written with more than two digits, is UNCERTAIN and left
 * to orjson. tests/sink/test_scan_numbers.py holds this to orjson (hypothesis over long digit
 * runs and exponents, and the boundary values), and tests/fuzz/fuzz_scan_asan.py fuzzes it.
 *
 * newlines (service/sink/native.py): b'\n' per part, for the batches' line-count check.
 *
 * tests/test_scan.py holds both to orjson and to the specification over every spelling.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_KEYS 256      /* top-level keys per line; more: Python path */
#define MAX_NESTED_KEYS 64 /* keys per nested object checked for duplicates */
#define MAX_DEPTH 64
/* The mapped groups in pop order, named as service/sink/rules.py names them (GROUPS);
 * service/sink/native.py checks at import that the two tables agree. The code below takes
 * the time group first and reads the severity override right after the severity group. */
static const char *const GROUP_NAMES[] = {
    "time", "severity", "service", "host", "message", "trace_id", "span_id",
};
#define NGROUPS ((int)(sizeof(GROUP_NAMES) / sizeof(GROUP_NAMES[0])))
enum { G_TIME = 0, G_SEVERITY = 1 };
#define SEVERITY_NUMBER "severity_number" /* rules.SEVERITY_NUMBER */
#define SEVERITY_NUMBER_LEN ((Py_ssize_t)sizeof(SEVERITY_NUMBER) - 1)
#define MAX_NAMES 16

enum { V_STRING = 1, V_INT, V_FLOAT, V_OTHER, V_NULL, V_OBJECT };
/* How sure a scan is, worst wins: OK (valid, written as orjson writes it), NONCANON (valid,
 * written otherwise), UNCERTAIN (orjson may refuse it: \u escapes that may be lone
 * surrogates, numbers that may overflow, nesting deeper than we check), INVALID. */
enum { OK = 0, NONCANON = 1, UNCERTAIN = 2, INVALID = 3 };

typedef struct {
    const unsigned char *p, *end;
    int ws;       /* whitespace seen outside strings */
    int escaped;  /* the last string scanned held an escape */
    int dups;     /* re-emitting: look for duplicate keys (valid JSON) and decimals not in
                     their shortest form (valid too); check_lines cares for neither */
    int lazy;     /* a top-level value of map_line: a 16-17 digit decimal's shortest-form
                     check waits in `pending` (the time field is exempt from it) */
    int pending;  /* significant digits of the decimal whose check waits, else 0 */
} Cur;

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero if any of 8 bytes may be '"', '\\', a control character or non-ASCII (false
 * positives only send the block to the byte loop). */
static inline uint64_t special8(const unsigned char *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | (x - ONES * 0x20) | x) & HIGHS;
}

static inline void skip_ws(Cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r')) {
        c->p++;
        c->ws = 1;
    }
}

/* Bytes a string may hold as they are: printable ASCII but '"' and '\\'. */
static unsigned char plain[256];

static void init_plain(void) {
    for (int b = 0x20; b < 0x80; b++) plain[b] = 1;
    plain['"'] = plain['\\'] = 0;
}

/* At the opening quote. Validates UTF-8 and escapes; NONCANON for \u and \/ escapes. */
static int scan_string(Cur *c) {
    const unsigned char *p = c->p + 1, *end = c->end;
    int rc = OK;
    c->escaped = 0;
    while (p < end) {
#ifdef __SSE2__
        /* plain ASCII, 16 bytes at a time, stopping at the first byte that is not: '"',
         * '\\', a control character, or (signed compare) one with the high bit set */
        while (end - p >= 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)p);
            __m128i hit = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                             _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
                _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)));
            unsigned m = (unsigned)_mm_movemask_epi8(hit);
            if (m) {
                p += __builtin_ctz(m);
                break;
            }
            p += 16;
        }
#endif
        while (end - p >= 8 && !special8(p)) p += 8; /* plain ASCII, 8 bytes at a time */
        while (p < end && plain[*p]) p++;
        if (p >= end) break;
        unsigned char b = *p;
        if (b == '"') {
            c->p = p + 1;
            return rc;
        }
        if (b == '\\') {
            if (p + 1 >= end) return INVALID;
            unsigned char e = p[1];
            c->escaped = 1;
            if (e == '"' || e == '\\' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                p += 2;
            } else if (e == '/') {
                if (rc < NONCANON) rc = NONCANON; /* orjson writes a plain '/' */
                p += 2;
            } else if (e == 'u') {
                rc = UNCERTAIN; /* orjson writes the character; a lone surrogate is refused */
                p += 2;
            } else {
                return INVALID;
            }
            continue;
        }
        if (b < 0x20) return INVALID;
        if (b < 0x80) {
            p++;
            continue;
        }
        /* UTF-8: no overlongs, no surrogates, nothing above U+10FFFF */
        if (b >= 0xC2 && b <= 0xDF) {
            if (p + 1 >= end || (p[1] & 0xC0) != 0x80) return INVALID;
            p += 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            if (p + 2 >= end || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return INVALID;
            if (b == 0xE0 && p[1] < 0xA0) return INVALID;
            if (b == 0xED && p[1] > 0x9F) return INVALID;
            p += 3;
        } else if (b >= 0xF0 && b <= 0xF4) {
            if (p + 3 >= end || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
                (p[3] & 0xC0) != 0x80)
                return INVALID;
            if (b == 0xF0 && p[1] < 0x90) return INVALID;
            if (b == 0xF4 && p[1] > 0x8F) return INVALID;
            p += 4;
        } else {
            return INVALID;
        }
    }
    return INVALID;
}

static inline int is_digit(unsigned char b) { return b >= '0' && b <= '9'; }

/* Whether the decimal s..e (no exponent, `sig` significant digits, 16 or 17) is the
 * shortest text that reads back as its double, i.e. what orjson (shortest round trip)
 * writes: its correctly rounded `sig`-digit form is itself, and no (sig - 1)-digit form
 * reads back as the same double (if none of sig - 1 digits does, none shorter does). */
static int shortest_form(const unsigned char *s, const unsigned char *e, int sig) {
    char text[64], out[64];
    Py_ssize_t len = e - s;
    if (len >= (Py_ssize_t)sizeof(text)) return 0;
    memcpy(text, s, (size_t)len);
    text[len] = 0;
    double d = strtod(text, NULL);
    char want[32];
    int nwant = 0;
    for (const char *q = text; *q && nwant < 31; q++) /* significant digits of the text */
        if (*q >= '0' && *q <= '9' && (nwant || *q != '0')) want[nwant++] = *q;
    want[nwant] = 0;
    snprintf(out, sizeof(out), "%.*e", sig - 1, d);
    char got[32];
    int ngot = 0;
    for (const char *q = out; *q && *q != 'e' && ngot < 31; q++)
        if (*q >= '0' && *q <= '9') got[ngot++] = *q;
    got[ngot] = 0;
    if (nwant != sig || strcmp(want, got) != 0) return 0;
    snprintf(out, sizeof(out), "%.*e", sig - 2, d);
    return strtod(out, NULL) != d;
}

/* Sets *kind to V_INT or V_FLOAT. */
static int scan_number(Cur *c, int *kind) {
    const unsigned char *p = c->p, *end = c->end;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    const unsigned char *int_start = p;
    if (p >= end || !is_digit(*p)) return INVALID;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) return INVALID; /* leading zero */
    } else {
        while (p < end && is_digit(*p)) p++;
    }
    Py_ssize_t int_digits = p - int_start, frac_digits = 0;
    int int_is_zero = (int_digits == 1 && *int_start == '0');
    int rc = OK;
    *kind = V_INT;
    if (p < end && *p == '.') {
        const unsigned char *frac = ++p;
        while (p < end && is_digit(*p)) p++;
        frac_digits = p - frac;
        if (frac_digits == 0) return INVALID;
        *kind = V_FLOAT;
        if (int_digits > 15) {
            rc = NONCANON;
        } else if (frac_digits == 1 && frac[0] == '0') {
            /* X.0: orjson writes the same */
        } else if (frac[frac_digits - 1] == '0') {
            rc = NONCANON; /* 1.50 -> 1.5 */
        } else {
            Py_ssize_t sig;
            if (int_is_zero) {
                Py_ssize_t zeros = 0;
                while (zeros < frac_digits && frac[zeros] == '0') zeros++;
                if (zeros > 4) rc = NONCANON; /* below 1e-5 orjson writes an exponent */
                sig = frac_digits - zeros;
            } else {
                sig = int_digits + frac_digits;
            }
            /* up to 15 digits every decimal is its double's shortest form; 16 and 17 only
             * sometimes (0.30000000000000004 is, 0.1000000000000000055 is not) */
            if (sig > 17) {
                rc = NONCANON;
            } else if (sig > 15 && c->lazy) {
                c->pending = (int)sig; /* map_line checks it unless it is the event time */
            } else if (sig > 15 && c->dups && !shortest_form(c->p, p, (int)sig)) {
                /* only re-emitting (dups: map_line) cares whether it is the shortest form:
                 * check_lines takes NONCANON as OK, and strtod plus two snprintf a number
                 * cost it as much as the rest of a line (every "ts" of benchmarks' data) */
                rc = NONCANON;
            }
        }
    } else if (int_digits > 18 || (neg && int_is_zero)) {
        rc = NONCANON;
    }
    /* The decimal exponent of the leading significant digit, bounded together with the
     * written exponent: orjson refuses a number that overflows a double (1e309, and
     * 1<210 zeros>e99 alike), so anything whose magnitude may reach that, or underflow
     * far enough to need care, is left to orjson. */
    Py_ssize_t lead = int_digits - 1;
    if (int_is_zero) {
        Py_ssize_t zeros = 0;
        while (zeros < frac_digits && int_start[2 + zeros] == '0') zeros++;
        lead = zeros == frac_digits ? 0 : -(zeros + 1); /* 0.0...: zero never overflows */
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int exp_neg = 0;
        if (p < end && (*p == '+' || *p == '-')) exp_neg = *p++ == '-';
        const unsigned char *exp = p;
        if (p >= end || !is_digit(*p)) return INVALID;
        Py_ssize_t e = 0;
        while (p < end && is_digit(*p)) {
            if (p - exp < 3) e = e * 10 + (*p - '0');
            p++;
        }
        *kind = V_FLOAT;
        rc = (p - exp > 2) ? UNCERTAIN : NONCANON; /* written past two digits: orjson decides */
        lead += exp_neg ? -e : e;
    }
    if (int_digits + frac_digits > 300 || lead > 300 || lead < -300)
        rc = UNCERTAIN; /* may overflow (or underflow) a double */
    c->p = p;
    return rc;
}

static int scan_value(Cur *c, int depth, int *kind);

static inline int worse(int a, int b) { return a > b ? a : b; }

static int scan_literal(Cur *c, const char *word, Py_ssize_t n) {
    if (c->end - c->p < n || memcmp(c->p, word, (size_t)n) != 0) return INVALID;
    c->p += n;
    return OK;
}

static int scan_container(Cur *c, int depth, int is_object) {
    int rc = OK, kind;
    const unsigned char *keys[MAX_NESTED_KEYS];
    Py_ssize_t lens[MAX_NESTED_KEYS];
    int nkeys = 0;
    if (depth > MAX_DEPTH) return UNCERTAIN; /* orjson decides (its own depth limit) */
    c->lazy = 0; /* nested numbers are checked at once */
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == (is_object ? '}' : ']')) {
        c->p++;
        return OK;
    }
    for (;;) {
        if (is_object) {
            if (c->p >= c->end || *c->p != '"') return INVALID;
            const unsigned char *k = c->p + 1;
            int r = scan_string(c);
            if (r == INVALID) return INVALID;
            rc = worse(rc, r);
            Py_ssize_t klen = (c->p - 1) - k;
            if (!c->dups) {
                /* validity only */
            } else if (nkeys < MAX_NESTED_KEYS) {
                for (int i = 0; i < nkeys; i++)
                    if (lens[i] == klen && memcmp(keys[i], k, (size_t)klen) == 0) rc = worse(rc, NONCANON);
                keys[nkeys] = k;
                lens[nkeys++] = klen;
            } else {
                rc = worse(rc, NONCANON); /* too many to check for duplicates */
            }
            skip_ws(c);
            if (c->p >= c->end || *c->p != ':') return INVALID;
            c->p++;
            skip_ws(c);
        }
        int r = scan_value(c, depth + 1, &kind);
        if (r == INVALID) return INVALID;
        rc = worse(rc, r);
        skip_ws(c);
        if (c->p >= c->end) return INVALID;
        if (*c->p == ',') {
            c->p++;
            skip_ws(c);
            continue;
        }
        if (*c->p == (is_object ? '}' : ']')) {
            c->p++;
            return rc;
        }
        return INVALID;
    }
}

static int scan_value(Cur *c, int depth, int *kind) {
    if (c->p >= c->end) return INVALID;
    switch (*c->p) {
    case '"':
        *kind = V_STRING;
        return scan_string(c);
    case '{':
        *kind = V_OBJECT;
        return scan_container(c, depth, 1);
    case '[':
        *kind = V_OTHER;
        return scan_container(c, depth, 0);
    case 't':
        *kind = V_OTHER;
        return scan_literal(c, "true", 4);
    case 'f':
        *kind = V_OTHER;
        return scan_literal(c, "false", 5);
    case 'n':
        *kind = V_NULL;
        return scan_literal(c, "null", 4);
    default:
        return scan_number(c, kind);
    }
}

/* ---- output buffers ---- */

typedef struct {
    PyObject *data;  /* bytes, over-allocated, resized at the end */
    char *base;
    Py_ssize_t len;
    int32_t *offsets; /* n + 1 */
    uint8_t *kind;    /* per line: 0 null, else the V_* kind */
} Column;

static int column_init(Column *col, Py_ssize_t n, Py_ssize_t cap) {
    col->data = PyBytes_FromStringAndSize(NULL, cap);
    col->offsets = PyMem_Calloc((size_t)n + 1, sizeof(int32_t));
    col->kind = PyMem_Calloc((size_t)n + 1, 1);
    if (!col->data || !col->offsets || !col->kind) return -1;
    col->base = PyBytes_AS_STRING(col->data);
    col->len = 0;
    return 0;
}

static void column_free(Column *col) {
    Py_XDECREF(col->data);
    PyMem_Free(col->offsets);
    PyMem_Free(col->kind);
}

/* Copy a canonical JSON value, dropping whitespace outside strings. */
static void copy_json(Column *col, const unsigned char *s, const unsigned char *e, int ws) {
    char *out = col->base + col->len;
    if (!ws) {
        memcpy(out, s, (size_t)(e - s));
        col->len += e - s;
        return;
    }
    int in_str = 0;
    char *o = out;
    for (const unsigned char *p = s; p < e; p++) {
        unsigned char b = *p;
        if (in_str) {
            *o++ = (char)b;
            if (b == '\\') {
                *o++ = (char)*++p;
            } else if (b == '"') {
                in_str = 0;
            }
        } else if (b == ' ' || b == '\t' || b == '\r') {
            continue;
        } else {
            if (b == '"') in_str = 1;
            *o++ = (char)b;
        }
    }
    col->len += o - out;
}

/* A string's content (between the quotes), with the canonical escapes undone. */
static void copy_string(Column *col, const unsigned char *s, const unsigned char *e, int escaped) {
    char *out = col->base + col->len;
    if (!escaped) {
        memcpy(out, s, (size_t)(e - s));
        col->len += e - s;
        return;
    }
    char *o = out;
    for (const unsigned char *p = s; p < e; p++) {
        if (*p != '\\') {
            *o++ = (char)*p;
            continue;
        }
        switch (*++p) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        default: *o++ = (char)*p; break; /* " and \ */
        }
    }
    col->len += o - out;
}

typedef struct {
    const unsigned char *key;
    Py_ssize_t klen;
    const unsigned char *val, *vend;
    int kind, escaped;
    int canon;   /* re-emitting it gives orjson's bytes */
    int pending; /* a decimal whose shortest-form check waits (Cur.pending) */
    int taken;
    uint32_t sig; /* key_sig of the key: most names are told apart without a memcmp */
} Field;

typedef struct {
    const char *name[MAX_NAMES];
    Py_ssize_t len[MAX_NAMES];
    Py_ssize_t head[MAX_NAMES]; /* length of the part before the first '.', or -1 */
    int n;
} Group;

/* Length, first and last byte of a key: equal keys have equal signatures. */
static inline uint32_t key_sig(const unsigned char *k, Py_ssize_t len) {
    return len ? ((uint32_t)len << 16) ^ ((uint32_t)k[0] << 8) ^ k[len - 1] : 0;
}

static int find_key(Field *f, int nf, const char *name, Py_ssize_t len) {
    uint32_t sig = key_sig((const unsigned char *)name, len);
    for (int i = 0; i < nf; i++)
        if (f[i].sig == sig && !f[i].taken && f[i].klen == len &&
            memcmp(f[i].key, name, (size_t)len) == 0)
            return i;
    return -1;
}

/* The value of a mapped column: a string's content, or the JSON text of anything else. */
static void emit_value(Column *col, Py_ssize_t row, Field *f, int ws) {
    if (f == NULL || f->kind == V_NULL) {
        col->kind[row] = 0;
    } else if (f->kind == V_STRING) {
        copy_string(col, f->val + 1, f->vend - 1, f->escaped);
        col->kind[row] = V_STRING;
    } else {
        copy_json(col, f->val, f->vend, ws);
        col->kind[row] = (uint8_t)f->kind;
    }
    col->offsets[row + 1] = (int32_t)col->len;
}

/* Returns 1 if the line was mapped, 0 if the Python path must take it. */
static int map_line(const unsigned char *s, const unsigned char *e, Group *groups,
                    const char *looked, Py_ssize_t row, Column *cols, int32_t *sevnum,
                    uint8_t *sevnum_ok, Field *f) {
    Cur c = {s, e, 0, 0, 1};
    int nf = 0, kind;
    skip_ws(&c);
    if (c.p >= c.end || *c.p != '{') return 0;
    c.p++;
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}') {
        c.p++;
    } else {
        for (;;) {
            if (nf >= MAX_KEYS || c.p >= c.end || *c.p != '"') return 0;
            Field *fl = &f[nf];
            fl->key = c.p + 1;
            if (scan_string(&c) != OK || c.escaped) return 0; /* keys: plain names only */
            fl->klen = (c.p - 1) - fl->key;
            fl->sig = key_sig(fl->key, fl->klen);
            for (int i = 0; i < nf; i++)
                if (f[i].sig == fl->sig && f[i].klen == fl->klen &&
                    memcmp(f[i].key, fl->key, (size_t)fl->klen) == 0)
                    return 0; /* duplicate key: orjson keeps the last value */
            skip_ws(&c);
            if (c.p >= c.end || *c.p != ':') return 0;
            c.p++;
            skip_ws(&c);
            fl->val = c.p;
            c.lazy = 1;
            c.pending = 0;
            int rc = scan_value(&c, 1, &kind);
            c.lazy = 0;
            if (rc >= UNCERTAIN) return 0;
            fl->canon = rc == OK;
            fl->pending = c.pending;
            fl->vend = c.p;
            fl->kind = kind;
            fl->escaped = c.escaped;
            fl->taken = 0;
            nf++;
            skip_ws(&c);
            if (c.p < c.end && *c.p == ',') {
                c.p++;
                skip_ws(&c);
                continue;
            }
            if (c.p < c.end && *c.p == '}') {
                c.p++;
                break;
            }
            return 0;
        }
    }
    skip_ws(&c);
    if (c.p != c.end) return 0;

    Field *chosen[NGROUPS] = {NULL};
    /* time: the first present name; a value that cannot be a time stays (as parse_time_us) */
    for (int j = 0; j < groups[G_TIME].n; j++) {
        int i = find_key(f, nf, groups[G_TIME].name[j], groups[G_TIME].len[j]);
        if (i < 0) continue;
        if (looked[j]) return 0; /* a later column looks at this name: depends on the parse */
        if (f[i].kind == V_STRING || f[i].kind == V_INT || f[i].kind == V_FLOAT) {
            f[i].taken = 1;
            chosen[G_TIME] = &f[i];
        }
        break;
    }
    for (int g = G_TIME + 1; g < NGROUPS; g++) {
        Group *gr = &groups[g];
        for (int j = 0; j < gr->n; j++) {
            int i = find_key(f, nf, gr->name[j], gr->len[j]);
            if (i >= 0) {
                f[i].taken = 1;
                chosen[g] = &f[i];
                break;
            }
            if (gr->head[j] >= 0) {
                int h = find_key(f, nf, gr->name[j], gr->head[j]);
                if (h >= 0 && f[h].kind == V_OBJECT) return 0; /* may match inside it */
            }
        }
        if (g == G_SEVERITY) { /* an int32 severity_number overrides, read after its pop */
            int i = find_key(f, nf, SEVERITY_NUMBER, SEVERITY_NUMBER_LEN);
            sevnum_ok[row] = 0;
            if (i >= 0 && f[i].kind == V_INT) {
                long long v = strtoll((const char *)f[i].val, NULL, 10);
                if (v >= INT32_MIN && v <= INT32_MAX) {
                    f[i].taken = 1;
                    sevnum[row] = (int32_t)v;
                    sevnum_ok[row] = 1;
                }
            }
        }
    }
    /* Only a number taken as the time may be written otherwise than orjson writes it: the
     * column is parsed from its text, and if it does not parse Python redoes the line. */
    for (int i = 0; i < nf; i++) {
        if (&f[i] == chosen[G_TIME] && f[i].kind != V_STRING) continue;
        if (!f[i].canon) return 0;
        if (f[i].pending && !shortest_form(f[i].val, f[i].vend, f[i].pending)) return 0;
    }
    for (int g = 0; g < NGROUPS; g++) emit_value(&cols[g], row, chosen[g], c.ws);
    Column *attrs = &cols[NGROUPS];
    char *start = attrs->base + attrs->len;
    char *o = start;
    *o++ = '{';
    for (int i = 0; i < nf; i++) {
        if (f[i].taken) continue;
        if (o - start > 1) *o++ = ',';
        *o++ = '"';
        memcpy(o, f[i].key, (size_t)f[i].klen);
        o += f[i].klen;
        *o++ = '"';
        *o++ = ':';
        attrs->len = o - attrs->base;
        copy_json(attrs, f[i].val, f[i].vend, c.ws);
        o = attrs->base + attrs->len;
    }
    if (o - start == 1) { /* nothing left: null, as the specification writes */
        attrs->kind[row] = 0;
        attrs->len = start - attrs->base;
    } else {
        *o++ = '}';
        attrs->kind[row] = V_OBJECT;
        attrs->len = o - attrs->base;
    }
    attrs->offsets[row + 1] = (int32_t)attrs->len;
    return 1;
}

static int parse_groups(PyObject *seq, Group *groups, char *looked) {
    PyObject *fast = PySequence_Fast(seq, "groups must be a sequence");
    if (!fast) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != NGROUPS) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "expected %d name groups", NGROUPS);
        return -1;
    }
    for (int g = 0; g < NGROUPS; g++) {
        PyObject *names = PySequence_Fast(PySequence_Fast_GET_ITEM(fast, g), "names");
        if (!names) {
            Py_DECREF(fast);
            return -1;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(names);
        if (n > MAX_NAMES) {
            Py_DECREF(names);
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "too many names in a group");
            return -1;
        }
        groups[g].n = (int)n;
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *name = PySequence_Fast_GET_ITEM(names, j);
            if (!PyBytes_Check(name)) {
                Py_DECREF(names);
                Py_DECREF(fast);
                PyErr_SetString(PyExc_TypeError, "names must be bytes");
                return -1;
            }
            /* names stay alive: the caller holds the groups object for the call */
            groups[g].name[j] = PyBytes_AS_STRING(name);
            groups[g].len[j] = PyBytes_GET_SIZE(name);
            const char *dot = memchr(groups[g].name[j], '.', (size_t)groups[g].len[j]);
            groups[g].head[j] = dot ? dot - groups[g].name[j] : -1;
        }
        Py_DECREF(names);
    }
    Py_DECREF(fast);
    /* time names that a later group (or the override) looks at */
    for (int j = 0; j < groups[G_TIME].n; j++) {
        looked[j] = 0;
        const char *t = groups[G_TIME].name[j];
        Py_ssize_t tl = groups[G_TIME].len[j];
        if (tl == SEVERITY_NUMBER_LEN && memcmp(t, SEVERITY_NUMBER, (size_t)tl) == 0) looked[j] = 1;
        for (int g = G_TIME + 1; g < NGROUPS; g++)
            for (int k = 0; k < groups[g].n; k++) {
                Py_ssize_t l = groups[g].head[k] >= 0 ? groups[g].head[k] : groups[g].len[k];
                if ((tl == groups[g].len[k] && memcmp(t, groups[g].name[k], (size_t)tl) == 0) ||
                    (tl == l && memcmp(t, groups[g].name[k], (size_t)tl) == 0))
                    looked[j] = 1;
            }
    }
    return 0;
}

static PyObject *column_result(Column *col, Py_ssize_t n) {
    if (_PyBytes_Resize(&col->data, col->len) < 0) return NULL;
    PyObject *off = PyBytes_FromStringAndSize((const char *)col->offsets, (n + 1) * 4);
    PyObject *kind = PyBytes_FromStringAndSize((const char *)col->kind, n);
    PyObject *out = (off && kind) ? PyTuple_Pack(3, kind, off, col->data) : NULL;
    Py_XDECREF(off);
    Py_XDECREF(kind);
    return out;
}

PyDoc_STRVAR(map_lines_doc,
"map_lines(parts, n, groups, release=False) -> (mapped, sevnum, sevnum_ok, columns)\n\n"
"parts: a list of bytes, each lines separated by b'\\n', n lines in all; groups: one\n"
"sequence of bytes names per entry of GROUPS, in that order.\n"
"mapped[i] is 1 where line i was mapped here, 0 where the Python path must take it.\n"
"columns: (kind, offsets, data) triples, one per group, then attributes; kind 0 is\n"
"null, offsets are int32.\n"
"release: parts (a list) whose every line was mapped are replaced by None as the scan\n"
"goes, and the heap trimmed every RELEASE_BYTES: a caller that holds the bytes only\n"
"there never holds input and columns whole together.");

/* Input let go between trims of the heap (glibc keeps freed pages resident otherwise). */
#define RELEASE_BYTES (16 << 20)

/* Drop the parts listed in `drop` (GIL held): None in their place, the heap trimmed. */
static void release_parts(PyObject **items, Py_ssize_t *drop, Py_ssize_t ndrop) {
    for (Py_ssize_t k = 0; k < ndrop; k++) {
        PyObject *old = items[drop[k]];
        Py_INCREF(Py_None);
        items[drop[k]] = Py_None;
        Py_DECREF(old);
    }
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static PyObject *map_lines(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    PyObject *parts_obj, *groups_obj;
    int release = 0;
    if (!PyArg_ParseTuple(args, "OnO|p", &parts_obj, &n, &groups_obj, &release)) return NULL;
    if (release && !PyList_CheckExact(parts_obj)) {
        PyErr_SetString(PyExc_TypeError, "release needs parts as a list");
        return NULL;
    }
    Group groups[NGROUPS];
    char looked[MAX_NAMES];
    Column cols[NGROUPS + 1];
    memset(cols, 0, sizeof(cols));
    PyObject *result = NULL, *mapped = NULL, *sevnum = NULL, *sevnum_ok = NULL, *colt = NULL;
    PyObject *parts = PySequence_Fast(parts_obj, "parts must be a sequence");
    Field *fields = PyMem_Malloc(sizeof(Field) * MAX_KEYS);
    Py_ssize_t *drop = NULL, ndrop = 0, dropped_bytes = 0;
    if (!parts) goto done;
    if (!fields) {
        PyErr_NoMemory();
        goto done;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must not be negative");
        goto done;
    }
    if (parse_groups(groups_obj, groups, looked) < 0) goto done;
    Py_ssize_t nparts = PySequence_Fast_GET_SIZE(parts), total = 0;
    for (Py_ssize_t i = 0; i < nparts; i++) {
        PyObject *part = PySequence_Fast_GET_ITEM(parts, i);
        if (!PyBytes_Check(part)) {
            PyErr_SetString(PyExc_TypeError, "parts must be bytes");
            goto done;
        }
        total += PyBytes_GET_SIZE(part);
    }
    if (total + 2 * n + 2 >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many bytes for one call (int32 offsets)");
        goto done;
    }
    /* Attributes add "{}" to a line at most; the columns never exceed the line. */
    for (int g = 0; g <= NGROUPS; g++)
        if (column_init(&cols[g], n, total + (g == NGROUPS ? 2 * n + 2 : 0) + 1) < 0) {
            PyErr_NoMemory();
            goto done;
        }
    mapped = PyBytes_FromStringAndSize(NULL, n);
    sevnum = PyBytes_FromStringAndSize(NULL, n * 4);
    sevnum_ok = PyBytes_FromStringAndSize(NULL, n);
    if (!mapped || !sevnum || !sevnum_ok) goto done;
    uint8_t *ok = (uint8_t *)PyBytes_AS_STRING(mapped);
    int32_t *sn = (int32_t *)PyBytes_AS_STRING(sevnum);
    uint8_t *snok = (uint8_t *)PyBytes_AS_STRING(sevnum_ok);
    memset(sn, 0, (size_t)n * 4);
    memset(snok, 0, (size_t)n);
    if (release && !(drop = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(nparts + 1)))) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject **items = PySequence_Fast_ITEMS(parts);
    Py_ssize_t row = 0;
    Py_BEGIN_ALLOW_THREADS /* the list and its bytes are held by the caller and by `parts` */
    for (Py_ssize_t i = 0; i < nparts && row <= n; i++) {
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(items[i]);
        const unsigned char *end = p + PyBytes_GET_SIZE(items[i]);
        Py_ssize_t first_row = row;
        for (;;) {
            const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
            const unsigned char *stop = nl ? nl : end;
            if (row < n) {
                Py_ssize_t marks[NGROUPS + 1];
                for (int g = 0; g <= NGROUPS; g++) marks[g] = cols[g].len;
                ok[row] = (uint8_t)map_line(p, stop, groups, looked, row, cols, sn, snok, fields);
                if (!ok[row]) { /* undo anything written, leave nulls */
                    snok[row] = 0;
                    for (int g = 0; g <= NGROUPS; g++) {
                        cols[g].len = marks[g];
                        cols[g].kind[row] = 0;
                        cols[g].offsets[row + 1] = (int32_t)marks[g];
                    }
                }
            }
            row++;
            if (!nl) break;
            p = nl + 1;
        }
        if (release && row <= n) { /* a part the Python path needs no line of can go */
            int all = 1;
            for (Py_ssize_t r = first_row; r < row && all; r++) all = ok[r];
            if (all) {
                drop[ndrop++] = i;
                dropped_bytes += PyBytes_GET_SIZE(items[i]);
            }
            if (dropped_bytes >= RELEASE_BYTES) {
                Py_BLOCK_THREADS
                release_parts(items, drop, ndrop);
                Py_UNBLOCK_THREADS
                ndrop = dropped_bytes = 0;
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (ndrop) release_parts(items, drop, ndrop);
    if (row != n) {
        PyErr_Format(PyExc_ValueError, "parts hold %zd lines, not %zd", row, n);
        goto done;
    }
    colt = PyTuple_New(NGROUPS + 1);
    if (!colt) goto done;
    for (int g = 0; g <= NGROUPS; g++) {
        PyObject *t = column_result(&cols[g], n);
        if (!t) goto done;
        PyTuple_SET_ITEM(colt, g, t);
    }
    result = PyTuple_Pack(4, mapped, sevnum, sevnum_ok, colt);
done:
    for (int g = 0; g <= NGROUPS; g++) column_free(&cols[g]);
    Py_XDECREF(mapped);
    Py_XDECREF(sevnum);
    Py_XDECREF(sevnum_ok);
    Py_XDECREF(colt);
    Py_XDECREF(parts);
    PyMem_Free(fields);
    PyMem_Free(drop);
    return result;
}

/* A line orjson certainly reads as a non-empty object, with nothing around it. */
static int certain_object(const unsigned char *s, const unsigned char *e) {
    if (e - s < 2 || s[0] != '{' || e[-1] != '}') return 0;
    const unsigned char *q = s + 1;
    while (*q == ' ' || *q == '\t' || *q == '\r') q++;
    if (*q == '}') return 0; /* {} is refused as empty */
    Cur c = {s, e, 0, 0, 0};
    return scan_container(&c, 1, 1) <= NONCANON && c.p == e;
}

PyDoc_STRVAR(check_lines_doc,
"check_lines(body, max_line) -> (status, ends)\n\n"
"One status per b'\\n'-separated line of body: 0 where the line is certainly a non-empty\n"
"JSON object orjson reads, at most max_line bytes, with no whitespace around it; 1 where\n"
"the caller must decide (and say why). ends: where each line ends in body (int64).");

static PyObject *check_lines(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t max_line;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &max_line)) return NULL;
    const unsigned char *base = buf.buf, *p = base, *end = p + buf.len;
    Py_ssize_t n = 1;
    for (const unsigned char *q = p; (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++) n++;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    PyObject *ends = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!out || !ends) {
        Py_XDECREF(out);
        Py_XDECREF(ends);
        PyBuffer_Release(&buf);
        return NULL;
    }
    uint8_t *status = (uint8_t *)PyBytes_AS_STRING(out);
    int64_t *stops = (int64_t *)PyBytes_AS_STRING(ends);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = 0; row < n; row++) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *stop = nl ? nl : end;
        status[row] = (stop - p <= max_line && certain_object(p, stop)) ? 0 : 1;
        stops[row] = stop - base;
        p = nl ? nl + 1 : end;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    PyObject *result = PyTuple_Pack(2, out, ends);
    Py_DECREF(out);
    Py_DECREF(ends);
    return result;
}

/* ---- zoned RFC 3339 times ---- */

static inline int digits2(const unsigned char *p, int *v) {
    if (!is_digit(p[0]) || !is_digit(p[1])) return 0;
    *v = (p[0] - '0') * 10 + (p[1] - '0');
    return 1;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* µs since the epoch of `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`, a real date and
 * time of year 0001-9999 with seconds 00-59 and an offset under 24 h: exactly the strings
 * event_time._ZONED admits that Arrow's cast and datetime.fromisoformat read alike. 0 for
 * anything else (the caller's Python path decides those). */
static int zoned_time(const unsigned char *s, Py_ssize_t n, int64_t *out) {
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int c1, c2, mo, d, h, mi, se;
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
        return 0;
    if (!digits2(s, &c1) || !digits2(s + 2, &c2) || !digits2(s + 5, &mo) ||
        !digits2(s + 8, &d) || !digits2(s + 11, &h) || !digits2(s + 14, &mi) ||
        !digits2(s + 17, &se))
        return 0;
    int y = c1 * 100 + c2;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 ||
        mi > 59 || se > 59)
        return 0;
    Py_ssize_t i = 19;
    int64_t frac = 0;
    if (i < n && s[i] == '.') {
        int k = 0;
        for (i++; i < n && is_digit(s[i]); i++, k++) {
            if (k >= 6) return 0;
            frac = frac * 10 + (s[i] - '0');
        }
        if (k == 0) return 0;
        for (; k < 6; k++) frac *= 10;
    }
    int64_t offset = 0;
    if (i + 1 == n && s[i] == 'Z') {
        i++;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (!digits2(s + i + 1, &oh) || !digits2(s + i + 4, &om) || oh > 23 || om > 59) return 0;
        offset = (int64_t)(oh * 60 + om) * 60 * 1000000;
        if (s[i] == '-') offset = -offset;
        i += 6;
    } else {
        return 0; /* naive, or another zone spelling */
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    *out = secs * 1000000 + frac - offset;
    return 1;
}

PyDoc_STRVAR(zoned_times_doc,
"zoned_times(kind, offsets, data) -> (us, ok)\n\n"
"A map_lines column (kind per row, int32 offsets, data): for each row of kind 1 (string)\n"
"that is a zoned RFC 3339 time as event_time._ZONED admits and Arrow and fromisoformat\n"
"read alike, ok is 1 and us its µs since the epoch (int64); every other row has ok 0.");

static PyObject *zoned_times(PyObject *self, PyObject *args) {
    Py_buffer kind, off, data;
    if (!PyArg_ParseTuple(args, "y*y*y*", &kind, &off, &data)) return NULL;
    PyObject *us = NULL, *ok = NULL, *result = NULL;
    Py_ssize_t n = kind.len;
    if (off.len < (n + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets too short");
        goto done;
    }
    us = PyBytes_FromStringAndSize(NULL, n * 8);
    ok = PyBytes_FromStringAndSize(NULL, n);
    if (!us || !ok) goto done;
    const uint8_t *k = kind.buf;
    const int32_t *o = off.buf;
    const unsigned char *d = data.buf;
    int64_t *u = (int64_t *)PyBytes_AS_STRING(us);
    uint8_t *g = (uint8_t *)PyBytes_AS_STRING(ok);
    for (Py_ssize_t r = 0; r < n; r++) {
        u[r] = 0;
        g[r] = 0;
        if (k[r] != V_STRING || o[r] < 0 || o[r] > o[r + 1] || o[r + 1] > data.len) continue;
        g[r] = (uint8_t)zoned_time(d + o[r], o[r + 1] - o[r], &u[r]);
    }
    result = PyTuple_Pack(2, us, ok);
done:
    Py_XDECREF(us);
    Py_XDECREF(ok);
    PyBuffer_Release(&kind);
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    return result;
}

/* ---- line counts ---- */

PyDoc_STRVAR(newlines_doc,
"newlines(parts) -> counts\n\n"
"parts: a sequence of bytes. counts: the number of b'\\n' in each part (int64), found\n"
"with memchr: the writer checks every batch's declared line count with it in one call.");

static PyObject *newlines(PyObject *self, PyObject *args) {
    PyObject *parts_obj;
    if (!PyArg_ParseTuple(args, "O", &parts_obj)) return NULL;
    PyObject *parts = PySequence_Fast(parts_obj, "parts must be a sequence");
    if (!parts) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(parts);
    PyObject **items = PySequence_Fast_ITEMS(parts);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyBytes_Check(items[i])) {
            PyErr_SetString(PyExc_TypeError, "parts must be bytes");
            Py_DECREF(parts);
            return NULL;
        }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!out) {
        Py_DECREF(parts);
        return NULL;
    }
    int64_t *counts = (int64_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS /* the parts are held by `parts` */
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(items[i]);
        const unsigned char *end = p + PyBytes_GET_SIZE(items[i]);
        int64_t count = 0;
        while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            count++;
            p++;
        }
        counts[i] = count;
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(parts);
    return out;
}

static PyMethodDef methods[] = {
    {"map_lines", map_lines, METH_VARARGS, map_lines_doc},
    {"check_lines", check_lines, METH_VARARGS, check_lines_doc},
    {"zoned_times", zoned_times, METH_VARARGS, zoned_times_doc},
    {"newlines", newlines, METH_VARARGS, newlines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "NDJSON lines -> mapped columns and attributes, natively.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) {
    init_plain();
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *names = PyTuple_New(NGROUPS);
    if (!names) goto fail;
    for (int g = 0; g < NGROUPS; g++) {
        PyObject *name = PyUnicode_FromString(GROUP_NAMES[g]);
        if (!name) {
            Py_DECREF(names);
            goto fail;
        }
        PyTuple_SET_ITEM(names, g, name);
    }
    if (PyModule_AddObject(m, "GROUPS", names) < 0) {
        Py_DECREF(names);
        goto fail;
    }
    if (PyModule_AddIntConstant(m, "NGROUPS", NGROUPS) < 0 ||
        PyModule_AddStringConstant(m, "SEVERITY_NUMBER", SEVERITY_NUMBER) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
