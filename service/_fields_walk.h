/* The walks over one access log line (service/_fields.c reads a batch with them): the
 * check pattern's, field by field (line_ok), and the read by position, token by token
 * (read_line). _fields.c's top comment says what each must match; this file holds how.
 *
 * Both look for their stop bytes 16 at a time where SSE2 is there, reading up to `limit`
 * bytes from the line's start (the next lines' bytes, masked off: the caller passes the end
 * of the data), so that a short token needs no byte-wise tail; nothing is read past it.
 */
#ifndef TIDEWAY_FIELDS_WALK_H
#define TIDEWAY_FIELDS_WALK_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

typedef struct {
    int quoted, words;       /* from the spec */
    Py_ssize_t piece, word;  /* where it is read: the piece, its first word (-1: quoted) */
} Field;

/* A set of up to four bytes a walk stops at (repeat one to use fewer), as a table for the
 * byte-wise tail of a scan. */
typedef struct {
#ifdef __SSE2__
    __m128i bytes[4]; /* each byte 16 times */
#endif
    uint8_t table[256];
} Stops;

/* The bytes a walk stops at: in an unquoted piece (space, quote, backslash), in a quoted
 * one (quote, backslash); the check's in a bare word (anything it may not hold), in a
 * quoted field (its end, an escape, a parking character), in the tail. */
static Stops stop_unquoted, stop_quoted, not_bare, check_quoted, not_tail;

static void init_stops(Stops *stops, uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    const uint8_t bytes[4] = {a, b, c, d};
    for (int k = 0; k < 4; k++) {
        stops->table[bytes[k]] = 1;
#ifdef __SSE2__
        stops->bytes[k] = _mm_set1_epi8((char)bytes[k]);
#endif
    }
}

static void init_tables(void) {
    init_stops(&stop_unquoted, ' ', '"', '\\', '\\');
    init_stops(&stop_quoted, '"', '\\', '\\', '\\');
    init_stops(&not_bare, ' ', '"', 0x1d, 0x1e);
    init_stops(&check_quoted, '"', '\\', 0x1d, 0x1e);
    init_stops(&not_tail, '\n', 0x1d, 0x1e, 0x1e);
}

/* The first byte of `stops` in s[i..n) (n if none). `limit` (>= n): how many bytes from s
 * may be read, the bytes from n on ignored. Why: the walks' stop loops, byte by byte, were
 * most of a line's cost (ALB: 440 bytes a line, walked twice). */
static inline size_t find(const uint8_t *s, size_t n, size_t limit, size_t i, const Stops *stops) {
#ifdef __SSE2__
    const __m128i a = stops->bytes[0], b = stops->bytes[1], c = stops->bytes[2],
                  d = stops->bytes[3];
    for (; i < n && i + 16 <= limit; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, a), _mm_cmpeq_epi8(v, b)),
                                   _mm_or_si128(_mm_cmpeq_epi8(v, c), _mm_cmpeq_epi8(v, d)));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        if (n - i < 16) mask &= (1u << (n - i)) - 1; /* this line's bytes only */
        if (mask) return i + (size_t)__builtin_ctz(mask);
    }
    if (i >= n) return n;
#endif
    while (i < n && !stops->table[s[i]]) i++;
    return i;
}

/* Where s[i] starts an escape (\\ or \"): the escape is two bytes. */
static int escape_at(const uint8_t *s, size_t n, size_t i) {
    return s[i] == '\\' && i + 1 < n && (s[i + 1] == '\\' || s[i + 1] == '"');
}

/* Where a field's text is in its line: s[start..end), and whether a word of it is "-" (or
 * empty) and so the field null; start -1 while the field is absent. */
typedef struct {
    Py_ssize_t start, end;
    int null_word;
} Span;

/* The end of a field matched at s[i] (the check pattern's), or -1; its text in `span`. */
static Py_ssize_t match_field(const uint8_t *s, size_t n, size_t limit, size_t i,
                              const Field *f, Span *span) {
    if (f->quoted) {
        if (i >= n || s[i] != '"') return -1;
        span->start = (Py_ssize_t)i + 1;
        for (i++;; i += 2) { /* past an escape: a backslash and the byte it takes */
            i = find(s, n, limit, i, &check_quoted);
            if (i >= n) return -1;
            if (s[i] == '"') {
                span->end = (Py_ssize_t)i;
                span->null_word = span->end == span->start ||
                                  (span->end == span->start + 1 && s[span->start] == '-');
                return (Py_ssize_t)i + 1;
            }
            if (s[i] != '\\') return -1; /* a parking character */
            if (i + 1 >= n || s[i + 1] == 0x1d || s[i + 1] == 0x1e) return -1;
        }
    }
    span->start = (Py_ssize_t)i;
    span->null_word = 0;
    for (int w = 0; w < f->words; w++) {
        if (w > 0) {
            if (i >= n || s[i] != ' ') return -1;
            i++;
        }
        size_t a = i;
        i = find(s, n, limit, i, &not_bare);
        if (i == a) return -1;
        if (i == a + 1 && s[a] == '-') span->null_word = 1;
    }
    span->end = (Py_ssize_t)i;
    return (Py_ssize_t)i;
}

/* Whether the check pattern matches the line s[0..n), and how many fields it matched in
 * order before it stopped (`matched`), their texts in `spans`.
 *
 * The pattern matches when its tail (?: [^\n\x1d\x1e]*)?$ does from the end of any field
 * from the `required`th on that the walk reaches. Each of those places but the end of the
 * line is a space, the later the fewer bytes after it, so the last of them decides: one
 * scan of what follows it (it was a scan to the end of the line for each optional field).
 * The walk goes on past a place the tail matches from: when every field matches, the
 * spans are the fields' texts as read by position (see split). */
static int line_ok(const uint8_t *s, size_t n, size_t limit, const Field *fields, int count,
                   int required, Span *spans, int *matched) {
    size_t i = 0;
    Py_ssize_t tail = -1; /* the last space after a field the tail may start from */
    int f = 0;
    for (; f < count; f++) {
        if (f >= required && i < n && s[i] == ' ') tail = (Py_ssize_t)i;
        size_t at = i;
        if (f > 0) {
            if (at >= n || s[at] != ' ') break;
            at++;
        }
        Py_ssize_t end = match_field(s, n, limit, at, &fields[f], &spans[f]);
        if (end < 0) break;
        i = (size_t)end;
    }
    *matched = f;
    if (f < required) return 0;
    if (i == n) return 1;
    if (s[i] == ' ') tail = (Py_ssize_t)i;
    return tail >= 0 && find(s, n, limit, (size_t)tail + 1, &not_tail) == n;
}

/* Whether the token at word w of piece (-1: the quoted piece) is past field x's place. */
static int passed(const Field *x, Py_ssize_t piece, Py_ssize_t w) {
    return x->piece < piece || (x->piece == piece && !x->quoted && x->word + x->words - 1 < w);
}

/* A line's fields by position (see the top), when the check matched it but not every field:
 * each field's span, or absent; returns whether the walk met a backslash. */
static int read_line(const uint8_t *s, size_t n, size_t limit, const Field *fields, int count,
                     Span *spans) {
    for (int f = 0; f < count; f++) spans[f].start = spans[f].end = -1, spans[f].null_word = 0;
    int escaped = 0;
    Py_ssize_t piece = 0, word = 0;
    size_t token = 0, i = 0;
    int f = 0;
    for (;;) {
        i = find(s, n, limit, i, (piece & 1) ? &stop_quoted : &stop_unquoted);
        if (i < n && s[i] == '\\') {
            escaped = 1;
            i += escape_at(s, n, i) ? 2 : 1;
            continue;
        }
        int quote = i < n && s[i] == '"'; /* else a space of an unquoted piece, or the end */
        /* the token s[token..i) ends: word `word` of piece `piece` (or the quoted piece) */
        Py_ssize_t w = (piece & 1) ? -1 : word;
        while (f < count && passed(&fields[f], piece, w)) f++; /* absent fields */
        if (f < count && fields[f].piece == piece) {
            const Field *x = &fields[f];
            int closed = quote; /* a quoted piece is a field only once its quote closes */
            if (x->quoted ? closed : (w >= x->word && w < x->word + x->words)) {
                Span *span = &spans[f];
                if (x->quoted || w == x->word) span->start = (Py_ssize_t)token;
                if (i == token || (i == token + 1 && s[token] == '-')) span->null_word = 1;
                if (x->quoted || w == x->word + x->words - 1) span->end = (Py_ssize_t)i, f++;
            }
        }
        if (i >= n || f >= count) break;
        if (quote) piece++, word = 0;
        else word++;
        token = ++i;
    }
    return escaped;
}

#endif
