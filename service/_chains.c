/* The candidate pass's digit half (_detect.c's column_bits): which values of a string column
 * hold a chain of digits a card number or a dotted quad may be read in, 64 bytes at a time.
 * Three classifiers of the bytes give the same bits: portable C, SSE2 and AVX2 (chosen when
 * the module loads, by what the CPU has); tests/pipeline/test_detect.py holds each to the
 * others and the bits to the patterns. */
#include "_detect.h"

/* The card and dotted-quad conditions, in one walk over the chains of digits that may hold
 * one; stops once every wanted bit is found. A chain is runs of digits joined by one
 * separator (' ', '-') or one dot, from a run no word character precedes (``\b`` before a
 * card; a dotted quad's left neighbour is outside [0-9A-Za-z_.]): the runs inside a chain
 * are walked with it. A card's 13 to 19 digits lie in runs joined by separators and end at
 * a run a word character does not follow, so the digits counted since the chain's start or
 * its last dot reach 13 there. A dotted quad starts at the chain's first run (unless a dot
 * precedes it) or after a separator, and holds three dots after it. */
static size_t chain(const uint8_t *s, size_t n, size_t i, uint8_t *found) {
    int quad_on = i == 0 || s[i - 1] != '.';
    size_t card = 0, dots = 0;
    for (;;) {
        size_t start = i;
        while (i < n && decimal[s[i]]) i++;
        card += i - start;
        if (card >= 13 && (i == n || !word[s[i]])) *found |= CARD;
        if (quad_on && dots >= 3) *found |= IPV4;
        if (i + 1 >= n || !decimal[s[i + 1]]) return i;
        if (s[i] == '.') {
            dots++;
            card = 0; /* '.' is no word character: a card may start after it */
        } else if (s[i] == ' ' || s[i] == '-') {
            quad_on = 1;
            dots = 0;
        } else {
            return i;
        }
        i++;
    }
}

/* 64 bytes' classes as bit masks (bit k: byte k): digits, word characters, and the bytes a
 * chain is made of, [0-9. -]. */
typedef struct {
    uint64_t digit, word, link;
} Masks;

/* One class bit a byte: its low nibble's table ANDed with its high nibble's (bytes past
 * ASCII have none). DIGIT is the sign bit, so a movemask reads the digits. */
enum { LOW_LETTER = 1, HIGH_LETTER = 2, UNDERSCORE = 4, DOT = 8, SPACE = 16, DASH = 32, DIGIT = 128 };
#define WORD_CLASSES (DIGIT | LOW_LETTER | HIGH_LETTER | UNDERSCORE)
#define LINK_CLASSES (DIGIT | DOT | SPACE | DASH)
static uint8_t by_low[16], by_high[16];

static void init_nibbles(void) {
    for (int n = 0; n < 16; n++) { /* 0x41-0x4F, 0x61-0x6F; 0x50-0x5A, 0x70-0x7A; 0x5F; 0x2E ... */
        by_low[n] = (uint8_t)((n <= 9 ? DIGIT : 0) | (n >= 1 ? LOW_LETTER : 0) | (n <= 10 ? HIGH_LETTER : 0) |
                              (n == 15 ? UNDERSCORE : 0) | (n == 14 ? DOT : 0) | (n == 0 ? SPACE : 0) |
                              (n == 13 ? DASH : 0));
    }
    by_high[2] = DOT | SPACE | DASH;
    by_high[3] = DIGIT;
    by_high[4] = by_high[6] = LOW_LETTER;
    by_high[5] = HIGH_LETTER | UNDERSCORE;
    by_high[7] = HIGH_LETTER;
}

static inline Masks masks_portable(const uint8_t *s) {
    Masks m = {0, 0, 0};
    for (int k = 0; k < 64; k++) {
        uint64_t bit = (uint64_t)1 << k;
        uint8_t c = (uint8_t)(by_low[s[k] & 15] & by_high[s[k] >> 4]);
        if (c & DIGIT) m.digit |= bit;
        if (c & WORD_CLASSES) m.word |= bit;
        if (c & LINK_CLASSES) m.link |= bit;
    }
    return m;
}

#ifdef __SSE2__
/* The same, 16 bytes a step (SSE2 has no byte shuffle: ranges and compares). */
static inline Masks masks_sse2(const uint8_t *s) {
    Masks m = {0, 0, 0};
    for (int k = 0; k < 64; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + k));
        __m128i d = in_range(v, '0', '9');
        __m128i w = _mm_or_si128(_mm_or_si128(d, in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 'z')),
                                 _mm_cmpeq_epi8(v, _mm_set1_epi8('_')));
        __m128i l = _mm_or_si128(_mm_or_si128(d, _mm_cmpeq_epi8(v, _mm_set1_epi8('.'))),
                                 _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')),
                                              _mm_cmpeq_epi8(v, _mm_set1_epi8('-'))));
        m.digit |= (uint64_t)(uint32_t)_mm_movemask_epi8(d) << k;
        m.word |= (uint64_t)(uint32_t)_mm_movemask_epi8(w) << k;
        m.link |= (uint64_t)(uint32_t)_mm_movemask_epi8(l) << k;
    }
    return m;
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
__attribute__((target("avx2"))) static inline Masks masks_avx2(const uint8_t *s) {
    const __m256i low = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)by_low));
    const __m256i high = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)by_high));
    const __m256i nibble = _mm256_set1_epi8(15), zero = _mm256_setzero_si256();
    Masks m = {0, 0, 0};
    for (int k = 0; k < 64; k += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(s + k));
        __m256i c = _mm256_and_si256(_mm256_shuffle_epi8(low, _mm256_and_si256(v, nibble)),
                                     _mm256_shuffle_epi8(high, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble)));
        __m256i w = _mm256_cmpeq_epi8(_mm256_and_si256(c, _mm256_set1_epi8((char)WORD_CLASSES)), zero);
        __m256i l = _mm256_cmpeq_epi8(_mm256_and_si256(c, _mm256_set1_epi8((char)LINK_CLASSES)), zero);
        m.digit |= (uint64_t)(uint32_t)_mm256_movemask_epi8(c) << k;
        m.word |= (uint64_t)(uint32_t)~_mm256_movemask_epi8(w) << k;
        m.link |= (uint64_t)(uint32_t)~_mm256_movemask_epi8(l) << k;
    }
    return m;
}
#endif

/* The digit half of column_bits. A chain that sets a bit spans 7 bytes of [0-9. -] or more
 * from its start (a dotted quad 7, a card 13), so only the starts seven such bytes follow
 * are walked: 64 bytes at a time, a start is a digit no word character precedes, or a
 * value's first byte if it is a digit. No such start lies inside the chain of a start that
 * fails the test (the chain's bytes would carry the run back to it), so the chains walked
 * are those a walk from every start would walk, and they set the same bits. Bytes at or
 * past the slice's end are read as NUL (no class). */
#define DIGIT_BITS_BODY(MASKS)                                                                  \
    size_t first = (size_t)offset_at(off, wide, start), last = (size_t)offset_at(off, wide, start + length); \
    Py_ssize_t r = 0, v = 0; /* the row of the next start walked; of the next value start */   \
    size_t hit = first;      /* the end of the last chain walked */                             \
    uint64_t carry = 0;      /* whether a word character ends the block before */              \
    uint8_t tail[128] = {0};                                                                    \
    if (last - first < 64) memcpy(tail, base + first, last - first);                            \
    Masks m = last - first < 64 ? MASKS(tail) : MASKS(base + first);                            \
    for (size_t p = first; p < last; p += 64) {                                                 \
        Masks next;                                                                             \
        if (p + 128 <= last) {                                                                  \
            next = MASKS(base + p + 64);                                                        \
        } else {                                                                                \
            memset(tail, 0, sizeof(tail));                                                      \
            if (p + 64 < last) memcpy(tail, base + p + 64, last - p - 64);                      \
            next = MASKS(tail);                                                                 \
        }                                                                                       \
        uint64_t starts = m.digit & ~((m.word << 1) | carry), values = 0;                       \
        carry = m.word >> 63;                                                                   \
        for (size_t a; v < length && (a = (size_t)offset_at(off, wide, start + v)) < p + 64; v++) \
            values |= (uint64_t)1 << (a - p);                                                   \
        starts |= values & m.digit;                                                             \
        unsigned __int128 run = ((unsigned __int128)next.link << 64) | m.link;                  \
        run &= run >> 1; /* bit k: bytes k..k+1 all [0-9. -]; then k..k+3; then k..k+6 */        \
        run &= run >> 2;                                                                        \
        run &= run >> 3;                                                                        \
        for (uint64_t walk = starts & (uint64_t)run; walk; walk &= walk - 1) {                  \
            size_t at = p + (size_t)__builtin_ctzll(walk);                                      \
            if (at < hit) continue;                                                             \
            while ((size_t)offset_at(off, wide, start + r + 1) <= at) r++;                      \
            if ((flags[r] & digits) == digits) continue;                                        \
            size_t a = (size_t)offset_at(off, wide, start + r), b = (size_t)offset_at(off, wide, start + r + 1); \
            uint8_t found = 0;                                                                  \
            hit = a + chain(base + a, b - a, at - a, &found);                                   \
            flags[r] |= found & digits;                                                         \
        }                                                                                       \
        m = next;                                                                               \
    }

#define DIGIT_BITS(NAME, MASKS, ATTRIBUTE)                                                      \
    ATTRIBUTE static void NAME(const uint8_t *base, const void *off, int wide, Py_ssize_t start,  \
                               Py_ssize_t length, uint8_t digits, uint8_t *flags) {               \
        DIGIT_BITS_BODY(MASKS)                                                                  \
    }
DIGIT_BITS(digit_bits_portable, masks_portable, )
#ifdef __SSE2__
DIGIT_BITS(digit_bits_sse2, masks_sse2, )
#endif
#ifdef HAVE_AVX2_PATH
DIGIT_BITS(digit_bits_avx2, masks_avx2, __attribute__((target("avx2"))))
#endif

/* The classifiers this build and CPU have, and the one digit_bits uses (the last, unless
 * use_digit_path chose another). */
typedef void (*DigitBits)(const uint8_t *, const void *, int, Py_ssize_t, Py_ssize_t, uint8_t, uint8_t *);
static const char *path_names[3];
static DigitBits path_functions[3];
static int path_count, path_used;

void init_digit_paths(void) {
    init_nibbles();
    path_names[path_count] = "portable";
    path_functions[path_count++] = digit_bits_portable;
#ifdef __SSE2__
    path_names[path_count] = "sse2";
    path_functions[path_count++] = digit_bits_sse2;
#endif
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        path_names[path_count] = "avx2";
        path_functions[path_count++] = digit_bits_avx2;
    }
#endif
    path_used = path_count - 1;
}

int text_bits(const uint8_t *s, size_t n, uint8_t digits) {
    uint8_t found = 0;
    for (size_t i = next_start(s, n, n, 0); i < n && (found & digits) != digits;)
        i = next_start(s, n, n, chain(s, n, i, &found));
    return found & digits;
}

int digit_path_count(void) { return path_count; }

const char *digit_path_name(int k) { return path_names[k]; }

const char *use_digit_path(const char *name) {
    for (int k = 0; k < path_count; k++) {
        if (strcmp(name, path_names[k]) == 0) {
            const char *before = path_names[path_used];
            path_used = k;
            return before;
        }
    }
    return NULL;
}

void digit_bits(const uint8_t *base, const void *off, int wide, Py_ssize_t start,
                Py_ssize_t length, uint8_t digits, uint8_t *flags) {
    path_functions[path_used](base, off, wide, start, length, digits, flags);
}
