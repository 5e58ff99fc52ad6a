/* Redaction's rewriting half (service/pipeline/detect.py): the e-mail, card and IPv4 detectors
 * applied, in redaction's fixed order, to the values the candidate pass (_detect.c) flagged,
 * one call a column.
 *
 * redact.py runs each detector's RE2 pattern through Arrow, and the card rule as _cards_in:
 * that is the specification, and the path without this module. Each step here is one
 * pattern's global replace (RE2::GlobalReplace: leftmost-first, the search going on after
 * each match), read off the pattern's structure:
 *
 *   email  [A-Za-z0-9._%+-]+@L(?:\.L)*\.[A-Za-z]{2,63}\b, L a label. A local part holds no
 *          '@', so the leftmost match is at the first '@' (after the search position) that
 *          a local-part character precedes and a domain follows; it starts at the first of
 *          the local-part characters before it, not before the search position. A label must
 *          be a whole run of [A-Za-z0-9-], alphanumeric at both ends, that a dot follows (the
 *          next byte can only be the dot), so the domain is a chain of labels, and the greedy
 *          repeat takes the most labels after which a TLD follows: 2 to 63 letters that no
 *          word character follows. The match ends at the last TLD along the chain.
 *   ipv4   (^|[^0-9A-Za-z_.])IPV4(\.?(?:[^0-9A-Za-z_.]|$)) replaced by \1label\2, in two
 *          passes (the pattern consumes its neighbours). Each octet must be a whole run of
 *          digits (a dot or the end group follows it), so it is 0-255 with no leading zero.
 *          The neighbours are whole UTF-8 characters: a column holding a value that is not
 *          valid UTF-8 is left to RE2 (the call answers None).
 *   card   redact._cards_in: the rule's readable form, in C.
 *
 * tests/pipeline/test_detect.py holds `redacted` to the specification with hypothesis (every
 * subset of the three, hostile bytes spliced in); tests/fuzz/fuzz_scan_asan.py runs it under
 * AddressSanitizer.
 */
#include "_detect.h"

#define NONE SIZE_MAX

/* Whether s[0..n) is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
static int utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!len || i + len > n) return 0;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        uint8_t d = s[i + 1];
        if ((c == 0xE0 && d < 0xA0) || (c == 0xED && d > 0x9F) || (c == 0xF0 && d < 0x90) ||
            (c == 0xF4 && d > 0x8F))
            return 0;
        i += len;
    }
    return 1;
}

/* ---- e-mail ---- */

#define EMAIL_LABEL "[REDACTED:email]"

/* The end of the e-mail match whose '@' is s[at] (0: none), its local part aside. */
static size_t email_end(const uint8_t *s, size_t n, size_t at) {
    size_t i = at + 1, k = i;
    while (k < n && label[s[k]]) k++;
    if (k == i || !alnum[s[i]] || !alnum[s[k - 1]] || k >= n || s[k] != '.') return 0;
    size_t best = 0;
    for (size_t dot = k;;) {
        size_t j = dot + 1, e = j;
        while (e < n && alpha[s[e]]) e++;
        if (e - j >= 2 && e - j <= 63 && (e == n || !word[s[e]])) best = e; /* a TLD here */
        for (e = j; e < n && label[s[e]];) e++;
        if (e == j || !alnum[s[j]] || !alnum[s[e - 1]] || e >= n || s[e] != '.') return best;
        dot = e; /* a label: the chain goes on */
    }
}

static int emails_in(const uint8_t *s, size_t n, Text *out) {
    if (reserve(out, 3 * n + sizeof(EMAIL_LABEL)) < 0) return -1; /* a match is 6 bytes or more */
    size_t p = 0, scan = 0;
    const uint8_t *q;
    while (scan < n && (q = memchr(s + scan, '@', n - scan)) != NULL) {
        size_t at = (size_t)(q - s), end;
        scan = at + 1;
        if (at == 0 || at - 1 < p || !local_part[s[at - 1]] || !(end = email_end(s, n, at)))
            continue;
        size_t start = at - 1;
        while (start > p && local_part[s[start - 1]]) start--;
        put(out, s + p, start - p);
        put(out, EMAIL_LABEL, sizeof(EMAIL_LABEL) - 1);
        p = scan = end;
    }
    put(out, s + p, n - p);
    return 0;
}

/* ---- IPv4 ---- */

#define IPV4_LABEL "[REDACTED:ipv4]"

/* The length of the character at s[i] if it is outside [0-9A-Za-z_.], else 0 (valid UTF-8, i
 * at a character's start: any character past ASCII is outside). */
static size_t outside_at(const uint8_t *s, size_t i) {
    uint8_t c = s[i];
    if (c < 0x80) return outside[c];
    return c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
}

/* The end of the octet that is the whole run of digits at s[i], or 0 if it is none. */
static size_t octet(const uint8_t *s, size_t n, size_t i) {
    size_t e = i;
    while (e < n && decimal[s[e]] && e - i < 4) e++;
    size_t len = e - i;
    if (len == 0 || len > 3 || (len > 1 && s[i] == '0')) return 0;
    if (len == 3 && (s[i] > '2' || (s[i] == '2' && (s[i + 1] > '5' || (s[i + 1] == '5' && s[i + 2] > '5')))))
        return 0;
    return e;
}

/* The end of the match whose address starts at s[d] (its left neighbour checked), past the
 * end group, or NONE; *address: the address's end. */
static size_t quad_match(const uint8_t *s, size_t n, size_t d, size_t *address) {
    size_t i = d;
    for (int k = 0; k < 4; k++) {
        if (k > 0) {
            if (i >= n || s[i] != '.') return NONE;
            i++;
        }
        if (!(i = octet(s, n, i))) return NONE;
    }
    *address = i;
    if (i == n) return n;
    if (s[i] == '.') { /* \.? takes it; then a neighbour or the end must follow */
        if (i + 1 == n) return n;
        size_t c = outside_at(s, i + 1);
        return c ? i + 1 + c : NONE;
    }
    size_t c = outside_at(s, i);
    return c ? i + c : NONE;
}

/* One pass of the IPv4 replace over s[0..n) (valid UTF-8); *blocked: whether an address was
 * passed over because the match before it took its left neighbour (what the second pass is
 * for: without one, a second pass finds nothing, as a label is never followed by a digit). */
static int ipv4_pass(const uint8_t *s, size_t n, Text *out, int *blocked) {
    if (reserve(out, 3 * n + sizeof(IPV4_LABEL)) < 0) return -1; /* a match is 7 bytes or more */
    size_t p = 0, address, end;
    *blocked = 0;
    for (size_t d = next_start(s, n, n, 0); d < n; d = next_start(s, n, n, d + 1)) {
        if (d > 0) { /* the left neighbour: a whole character */
            size_t c = d - 1;
            if (s[c] < 0x80 && !outside[s[c]]) continue; /* a dot */
            while (c > 0 && (s[c] & 0xC0) == 0x80) c--;
            if (c < p) {
                *blocked |= quad_match(s, n, d, &address) != NONE;
                continue;
            }
        }
        if ((end = quad_match(s, n, d, &address)) == NONE) continue;
        put(out, s + p, d - p); /* up to the address: its left neighbour stays */
        put(out, IPV4_LABEL, sizeof(IPV4_LABEL) - 1);
        put(out, s + address, end - address); /* and so does the end group */
        p = end;
        d = end - 1;
    }
    put(out, s + p, n - p);
    return 0;
}

/* ---- the column ---- */

typedef struct {
    Text a, b;
    Groups g;
} Scratch;

/* Makes out the text the next step reads (out's bytes, until the next swap). */
static void advance(Text **out, Scratch *x, const uint8_t **t, size_t *m, const Text **result) {
    *t = (*out)->buf, *m = (*out)->len, *result = *out;
    *out = *out == &x->a ? &x->b : &x->a;
}

static int unchanged(const Text *out, const uint8_t *t, size_t m) {
    return out->len == m && memcmp(out->buf, t, m) == 0;
}

/* The wanted steps over s[0..n) in redaction's order, each only where the text it reads has
 * its bit (`bits`: the candidate pass's, for s): a step finds nothing in a text without it.
 * A step that changes the text asks for the later steps' bits of the new text. *result: the
 * text (x's a or b), NULL if no step changed it. 1 if the IPv4 step would read a value that
 * is not valid UTF-8 (the rewrites keep every byte past ASCII, so s's validity is the text's). */
static int rewrite(const uint8_t *s, size_t n, int wanted, int bits, Scratch *x, const Text **result) {
    const uint8_t *t = s;
    size_t m = n;
    Text *out = &x->a;
    *result = NULL;
    if (wanted & bits & EMAIL) {
        out->len = 0;
        if (emails_in(t, m, out) < 0) return -1;
        if (!unchanged(out, t, m)) {
            advance(&out, x, &t, &m, result);
            bits = text_bits(t, m, (uint8_t)(wanted & (CARD | IPV4)));
        }
    }
    if (wanted & bits & CARD) {
        out->len = 0;
        if (groups_for(&x->g, m) < 0 || cards_in(t, m, out, &x->g) < 0) return -1;
        if (!unchanged(out, t, m)) {
            advance(&out, x, &t, &m, result);
            bits = text_bits(t, m, (uint8_t)(wanted & IPV4));
        }
    }
    if (!(wanted & bits & IPV4)) return 0;
    if (!utf8_valid(t, m)) return 1;
    for (int pass = 0, blocked = 1; pass < 2 && blocked; pass++) { /* a pass that changes nothing blocks nothing */
        out->len = 0;
        if (ipv4_pass(t, m, out, &blocked) < 0) return -1;
        if (unchanged(out, t, m)) break;
        advance(&out, x, &t, &m, result);
    }
    return 0;
}

const char redacted_doc[] =
    "redacted(offsets, data, start, length, wide, wanted) -> (offsets, data, changed)\n\n"
    "The detectors of `wanted` (1 email, 2 credit_card, 4 ipv4) applied in redaction's order to\n"
    "each value of a string column (buffers and slice as for candidates) that candidates\n"
    "would flag for one of them; the others are copied. New offsets (from 0,\n"
    "the input's width) and data (both empty if no value changed), and how many values changed;\n"
    "None if a value to rewrite\n"
    "for ipv4 is not valid UTF-8 (RE2 reads its neighbours as characters).";

PyObject *redacted(PyObject *self, PyObject *args) {
    Py_buffer off, data;
    Py_ssize_t start, length, changed = 0;
    int wide, wanted, invalid = 0, failed = 0;
    if (!PyArg_ParseTuple(args, "y*y*nnpi", &off, &data, &start, &length, &wide, &wanted))
        return NULL;
    PyObject *offsets = NULL, *result = NULL;
    Scratch x;
    Text text = {NULL, 0, 0};
    memset(&x, 0, sizeof(x));
    if (check_offsets(&off, &data, start, length, wide) < 0) goto done;
    offsets = PyBytes_FromStringAndSize(NULL, (length + 1) * (wide ? 8 : 4));
    if (!offsets) goto done;
    char *o = PyBytes_AS_STRING(offsets);
    const uint8_t *in = (const uint8_t *)data.buf;
    int64_t pending = offset_at(off.buf, wide, start), last = offset_at(off.buf, wide, start + length);
    size_t size = 0;
    uint8_t *flags = PyMem_RawMalloc((size_t)length + 1);
    if (!flags) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    column_bits(in, off.buf, wide, start, length, wanted, flags);
    uint8_t any = 0; /* most columns hold nothing to redact: no walk over their rows */
    for (Py_ssize_t r = 0; r < length; r++) any |= flags[r];
    /* text holds the output before value r but for the run of unchanged values from pending,
     * copied when a changed value ends it (or at the end, if any value changed). */
    for (Py_ssize_t r = 0; any && r <= length; r++) {
        int64_t a = offset_at(off.buf, wide, start + r);
        size_t at = text.len + (size_t)(a - pending);
        if (wide) ((int64_t *)o)[r] = (int64_t)at;
        else ((int32_t *)o)[r] = (int32_t)(at <= INT32_MAX ? at : 0); /* refused below */
        if (r == length) break;
        int64_t b = offset_at(off.buf, wide, start + r + 1);
        size_t n = (size_t)(b - a);
        if (!(flags[r] & wanted)) continue;
        const Text *done;
        int status = rewrite(in + a, n, wanted, flags[r], &x, &done);
        if (status > 0) {
            invalid = 1;
            break;
        }
        if (status < 0 || (done && reserve(&text, (size_t)(a - pending) + done->len) < 0)) {
            failed = 1;
            break;
        }
        if (!done) continue; /* unchanged: it stays in the run */
        changed++;
        put(&text, in + pending, (size_t)(a - pending));
        put(&text, done->buf, done->len);
        pending = b;
    }
    size = text.len + (size_t)(last - pending);
    if (!failed && !invalid && changed) {
        if (reserve(&text, (size_t)(last - pending)) < 0) failed = 1;
        else put(&text, in + pending, (size_t)(last - pending));
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
    } else if (invalid) {
        result = Py_NewRef(Py_None);
    } else if (!wide && size > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "redacted column too large for int32 offsets");
    } else if (!changed) {
        result = Py_BuildValue("(y#y#n)", "", (Py_ssize_t)0, "", (Py_ssize_t)0, changed);
    } else {
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)text.buf, (Py_ssize_t)text.len);
        if (bytes) result = Py_BuildValue("(OOn)", offsets, bytes, changed);
        Py_XDECREF(bytes);
    }
    PyMem_RawFree(flags);
done:
    PyMem_RawFree(x.a.buf);
    PyMem_RawFree(x.b.buf);
    PyMem_RawFree(x.g.at);
    PyMem_RawFree(x.g.len);
    PyMem_RawFree(x.g.covered);
    PyMem_RawFree(x.g.card_end);
    PyMem_RawFree(text.buf);
    Py_XDECREF(offsets);
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    return result;
}
