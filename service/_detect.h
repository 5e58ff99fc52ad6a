/* What the parts of the _detect module share: _detect.c (the module, the candidate pass,
 * the byte classes), _chains.c (the pass's digit half) and _redact.c with _cards.c (the
 * values rewritten). Built with -fvisibility=hidden:
 * nothing here leaves the module. */
#ifndef TIDEWAY_DETECT_H
#define TIDEWAY_DETECT_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
/* 0xff in each byte of v from lo to hi. */
static inline __m128i in_range(__m128i v, char lo, char hi) {
    __m128i x = _mm_sub_epi8(v, _mm_set1_epi8(lo));
    return _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8((char)(hi - lo))), x);
}
#endif

enum { EMAIL = 1, CARD = 2, IPV4 = 4 };

/* Byte classes (filled when the module loads): [A-Za-z0-9._%+-], [A-Za-z0-9], [A-Za-z0-9.-],
 * [A-Za-z0-9-], [A-Za-z], [0-9], [A-Za-z0-9_], and ASCII outside [0-9A-Za-z_.]. */
extern uint8_t local_part[256], alnum[256], domain[256], label[256], alpha[256], decimal[256],
    word[256], outside[256];

/* The first digit at or after s[i] that no word character precedes (n if none); it may read
 * up to s[limit - 1]. */
size_t next_start(const uint8_t *s, size_t n, size_t limit, size_t i);
/* The digit half of column_bits (_chains.c): flags[r] |= the bits of `digits` (CARD, IPV4)
 * whose condition value r of the slice may meet; and its byte classifiers ("paths"). */
void digit_bits(const uint8_t *base, const void *off, int wide, Py_ssize_t start,
                Py_ssize_t length, uint8_t digits, uint8_t *flags);
/* The bits of `digits` digit_bits gives one short text, s[0..n), walking every chain start
 * (for a value a rewrite just changed: no setup of the 64-byte blocks). */
int text_bits(const uint8_t *s, size_t n, uint8_t digits);
void init_digit_paths(void);
int digit_path_count(void);
const char *digit_path_name(int k);
const char *use_digit_path(const char *name); /* the one used before; NULL: no such path */
/* flags[r]: the bits of `wanted` whose pattern may match value r of the column slice (see
 * _detect.c); base: the data buffer (read only inside the slice's values), off: the offsets
 * (checked). */
void column_bits(const uint8_t *base, const void *off, int wide,
                 Py_ssize_t start, Py_ssize_t length, int wanted, uint8_t *flags);
/* offsets[i] of an Arrow string column (int64 if wide, else int32). */
static inline int64_t offset_at(const void *offsets, int wide, Py_ssize_t i) {
    return wide ? ((const int64_t *)offsets)[i] : ((const int32_t *)offsets)[i];
}
/* 0 if offsets[start..start+length] are inside the data and in order; -1 with an error. */
int check_offsets(const Py_buffer *off, const Py_buffer *data, Py_ssize_t start,
                  Py_ssize_t length, int wide);

/* A growing byte buffer (the GIL is released while it grows: raw allocator). */
typedef struct {
    uint8_t *buf;
    size_t len, cap;
} Text;

static inline int reserve(Text *t, size_t more) {
    if (t->len + more <= t->cap) return 0;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + more) cap *= 2;
    uint8_t *b = PyMem_RawRealloc(t->buf, cap);
    if (!b) return -1;
    t->buf = b;
    t->cap = cap;
    return 0;
}

static inline void put(Text *t, const void *s, size_t n) { /* room reserved by the caller */
    memcpy(t->buf + t->len, s, n);
    t->len += n;
}

typedef struct {
    size_t *at, *len, *covered; /* the run's groups (start, digits); card digits from i on */
    size_t room;                 /* entries each array has */
    Py_ssize_t *card_end;        /* the last group of the card chosen at group i, or -1 */
} Groups;

/* redact._cards_in of s[0..n), appended to out; g with room for n bytes' groups (groups_for). */
int cards_in(const uint8_t *s, size_t n, Text *out, Groups *g);
int groups_for(Groups *g, size_t n);

PyObject *redacted(PyObject *self, PyObject *args);
extern const char redacted_doc[];

#endif
