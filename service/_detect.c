/* Redaction's native half (service/pipeline/detect.py), the module: which values of a string
 * column may hold an e-mail address, a card number or an IPv4 address (one pass over its
 * bytes for all three: the '@'s here, the chains of digits in _chains.c); the values
 * rewritten are _redact.c's.
 *
 * Redaction (service/pipeline/redact.py) runs each detector's RE2 pattern through Arrow, and
 * that is its specification. Most values hold nothing to redact, and RE2 searching for "any
 * of the patterns" was half of redaction's time. `candidates` only says which values RE2
 * must look at, testing a necessary condition of each pattern: a value it does not flag
 * cannot match, so it is left as RE2 would have left it.
 *
 *   email (bit 1)        a '@' between a local-part character [A-Za-z0-9._%+-] and a
 *                        character [A-Za-z0-9], followed by a run of [A-Za-z0-9.-] that
 *                        holds a '.' and two letters (the pattern's ``\.[A-Za-z]{2,63}``);
 *   credit_card (bit 2)  13 digits or more, each next to the last or one ' ' or '-' away,
 *                        between word boundaries (``\b[2-6](?:[ -]?[0-9]){12,18}\b``);
 *   ipv4 (bit 4)         four runs of digits joined by single dots, the first after the
 *                        start or a character outside [0-9A-Za-z_.] (a dotted quad).
 *
 * tests/pipeline/test_detect.py holds each bit to its pattern with hypothesis, and redaction
 * with and without this module to each other byte for byte.
 */
#include "_detect.h"

uint8_t local_part[256], alnum[256], domain[256], label[256], alpha[256], decimal[256],
    word[256], outside[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        int letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        int is_digit = c >= '0' && c <= '9';
        alpha[c] = (uint8_t)letter;
        decimal[c] = (uint8_t)is_digit;
        word[c] = (uint8_t)(letter || is_digit || c == '_');
        alnum[c] = (uint8_t)(letter || is_digit);
        domain[c] = (uint8_t)(letter || is_digit || c == '.' || c == '-');
        local_part[c] = (uint8_t)(letter || is_digit || (c && strchr("._%+-", c) != NULL));
        label[c] = (uint8_t)(letter || is_digit || c == '-');
        outside[c] = (uint8_t)(c < 0x80 && !word[c] && c != '.'); /* [^0-9A-Za-z_.], ASCII */
    }
}

/* Whether the '@' at s[at] may be inside an e-mail address (see the bits above). */
static int email_at(const uint8_t *s, size_t n, size_t at) {
    if (at == 0 || at + 1 >= n || !local_part[s[at - 1]] || !alnum[s[at + 1]]) return 0;
    for (size_t i = at + 1; i + 2 < n && domain[s[i]]; i++)
        if (s[i] == '.' && alpha[s[i + 1]] && alpha[s[i + 2]]) return 1;
    return 0;
}


/* The first digit at or after s[i] that no word character precedes (n if none): where a
 * card or a dotted quad may start. 16 bytes at a time where SSE2 is there, reading up to
 * s[limit - 1] (the column's next values: a short value needs no byte-wise tail). */
size_t next_start(const uint8_t *s, size_t n, size_t limit, size_t i) {
    if (i == 0) {
        if (n > 0 && decimal[s[0]]) return 0;
        i = 1;
    }
#ifdef __SSE2__
    for (; i < n && i + 16 <= limit; i += 16) {
        __m128i prev = _mm_loadu_si128((const __m128i *)(s + i - 1));
        __m128i digits = in_range(_mm_loadu_si128((const __m128i *)(s + i)), '0', '9');
        __m128i letters = in_range(_mm_or_si128(prev, _mm_set1_epi8(0x20)), 'a', 'z');
        __m128i words = _mm_or_si128(_mm_or_si128(in_range(prev, '0', '9'), letters),
                                     _mm_cmpeq_epi8(prev, _mm_set1_epi8('_')));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_andnot_si128(words, digits));
        if (n - i < 16) mask &= (1u << (n - i)) - 1; /* the bytes of this value only */
        if (mask) return i + (size_t)__builtin_ctz(mask);
    }
#endif
    while (i < n && !(decimal[s[i]] && !word[s[i - 1]])) i++;
    return i;
}

/* One walk over the slice's bytes, not one a value: the '@'s by memchr, the chains by
 * digit_bits, each mapped to its value as the walk passes the offsets. */
void column_bits(const uint8_t *base, const void *off, int wide,
                 Py_ssize_t start, Py_ssize_t length, int wanted, uint8_t *flags) {
    memset(flags, 0, (size_t)length);
    size_t first = (size_t)offset_at(off, wide, start), last = (size_t)offset_at(off, wide, start + length);
    if (wanted & EMAIL) {
        Py_ssize_t r = 0;
        const uint8_t *q = base + first, *end = base + last;
        while (q < end && (q = memchr(q, '@', (size_t)(end - q))) != NULL) {
            size_t at = (size_t)(q++ - base);
            while ((size_t)offset_at(off, wide, start + r + 1) <= at) r++;
            size_t a = (size_t)offset_at(off, wide, start + r);
            size_t n = (size_t)offset_at(off, wide, start + r + 1) - a;
            if (!(flags[r] & EMAIL) && email_at(base + a, n, at - a)) flags[r] |= EMAIL;
        }
    }
    uint8_t digits = (uint8_t)(wanted & (CARD | IPV4));
    if (digits) digit_bits(base, off, wide, start, length, digits, flags);
}

/* 0 if offsets[start..start+length] are inside the data and in order; -1 with an error. */
int check_offsets(const Py_buffer *off, const Py_buffer *data, Py_ssize_t start,
                         Py_ssize_t length, int wide) {
    Py_ssize_t width = wide ? 8 : 4;
    if (start < 0 || length < 0 || off->len / width < start + length + 1) {
        PyErr_SetString(PyExc_ValueError, "offsets too short for the slice");
        return -1;
    }
    /* In order, the first at 0 or more and the last inside the data: no early exit, so the
     * loop over a column's offsets is vectorised. */
    int bad = offset_at(off->buf, wide, start) < 0 || offset_at(off->buf, wide, start + length) > data->len;
    if (wide) {
        const int64_t *o = (const int64_t *)off->buf + start;
        for (Py_ssize_t r = 1; r <= length; r++) bad |= o[r] < o[r - 1];
    } else {
        const int32_t *o = (const int32_t *)off->buf + start;
        for (Py_ssize_t r = 1; r <= length; r++) bad |= o[r] < o[r - 1];
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "offsets outside the data");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(candidates_doc,
"candidates(offsets, data, start, length, wide, wanted) -> flags\n\n"
"A string column's buffers (Arrow: offsets int32, or int64 if wide; data) and its slice\n"
"(start, length). flags: one byte a value, the bits of `wanted` (1 email, 2 credit_card,\n"
"4 ipv4) whose pattern may match it. Null slots are read as their bytes (the caller\n"
"masks them).");

static PyObject *candidates(PyObject *self, PyObject *args) {
    Py_buffer off, data;
    Py_ssize_t start, length;
    int wide, wanted;
    if (!PyArg_ParseTuple(args, "y*y*nnpi", &off, &data, &start, &length, &wide, &wanted))
        return NULL;
    PyObject *out = NULL;
    if (check_offsets(&off, &data, start, length, wide) < 0) goto done;
    out = PyBytes_FromStringAndSize(NULL, length);
    if (!out) goto done;
    uint8_t *flags = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS /* the buffers are held until done */
    column_bits((const uint8_t *)data.buf, off.buf, wide, start, length, wanted, flags);
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    return out;
}

PyDoc_STRVAR(use_path_doc,
"use_path(name) -> str\n\n"
"Makes the candidate pass classify bytes by `name` (one of PATHS: 'portable', 'sse2',\n"
"'avx2', as this build and CPU have them; the last is the default) and returns the one\n"
"used before. For tests, which hold every path to the same bits.");

static PyObject *use_path(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    const char *before = use_digit_path(name);
    if (before) return PyUnicode_FromString(before);
    PyErr_Format(PyExc_ValueError, "no candidate path %R here", PyTuple_GET_ITEM(args, 0));
    return NULL;
}

static PyMethodDef methods[] = {
    {"candidates", candidates, METH_VARARGS, candidates_doc},
    {"use_path", use_path, METH_VARARGS, use_path_doc},
    {"redacted", redacted, METH_VARARGS, redacted_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_detect", "Redaction's candidate pass and rewriting, natively.",
    -1, methods, NULL, NULL, NULL, NULL,
};

static int add_paths(PyObject *m) {
    int count = digit_path_count();
    PyObject *names = PyTuple_New(count);
    if (!names) return -1;
    for (int k = 0; k < count; k++) {
        PyObject *name = PyUnicode_FromString(digit_path_name(k));
        if (!name) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, k, name);
    }
    int status = PyModule_AddObjectRef(m, "PATHS", names);
    Py_DECREF(names);
    return status;
}

PyMODINIT_FUNC PyInit__detect(void) {
    init_tables();
    init_digit_paths();
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "EMAIL", EMAIL) < 0 ||
        PyModule_AddIntConstant(m, "CREDIT_CARD", CARD) < 0 ||
        PyModule_AddIntConstant(m, "IPV4", IPV4) < 0 || add_paths(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
