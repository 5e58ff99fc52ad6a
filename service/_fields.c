/* The space- and quote-delimited access log layouts (ALB, S3 server access, combined), read
 * in one pass a line: service/pipeline/parsers/tokens.py's Layout, natively.
 *
 * Layout reads a column through Arrow: an RE2 check of the whole line (one capture-free
 * pattern), a split on the double quote, a split of each unquoted piece on the space, one
 * take a field, and escapes parked and unparked around the splits. That is its
 * specification, and what runs without this module (TIDEWAY_NO_EXTENSIONS=1). `split` gives
 * the same answer from one walk over each line: whether the check pattern matches it, and
 * each field's text as its own string column (Arrow buffers), "-" and "" null.
 *
 * A layout is `spec`, one byte a field: 'q' a quoted field, '1'..'9' a bare field of that
 * many space-separated words; the first `required` fields must be there, the rest are
 * optional in order. The check pattern is  ^F1 F2 .. Fr(?: Fr+1(?: ..)?)?(?: T)?$  with a
 * bare word [^ "\x1d\x1e]+, a quoted field "(?:[^"\\\x1d\x1e]|\\[^\x1d\x1e])*" and a tail
 * T of any bytes but '\n', 0x1d and 0x1e (no line holding a parking character passes). A
 * field's text is read by position as the specification reads it: the line is cut at each
 * double quote that is not escaped (\" and \\ are escapes, read left to right), the pieces
 * alternate unquoted and quoted, and a quoted field is the piece after its opening quote,
 * present when its closing quote is there; a bare field is words of an unquoted piece cut
 * at each space. \\ and \" in a field's text become \ and ".
 *
 * `cut` is Arrow's split_pattern at a one-byte separator (the delimited formats: VPC Flow,
 * CloudFront; service/pipeline/parsers/fields.py), the same list column from one memchr a
 * piece.
 *
 * Every byte may be hostile: offsets are checked against the data before any is read, and
 * a field's output is never longer than the line it came from. The walks over a line (the
 * check's, and the read by position for a line the check did not match field by field to
 * the last) are in _fields_walk.h; this file holds the columns they fill. tests/pipeline/
 * test_fields.py holds `split` to the specification (hypothesis), tests/fuzz/
 * fuzz_scan_asan.py runs it under AddressSanitizer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_fields_walk.h"

#define MAX_FIELDS 64
#define SAMPLE 64 /* the lines that size the columns' text */
#define PAD 32    /* room past a column's text: a short field is copied 32 bytes at a time */

typedef struct {
    int32_t *offsets;
    uint8_t *data, *validity;
    PyObject *offsets_obj, *data_obj, *validity_obj;
    Py_ssize_t written, capacity, nulls;
} Column;

/* Appends s[a..b) to the column, escapes read (`escaped`: the line may hold one); or a null
 * when absent or "-" or "". The column has PAD bytes of room past the line's length, and
 * s[0..limit) may be read. */
static void append(Column *c, Py_ssize_t row, const uint8_t *s, size_t limit, size_t a,
                   size_t b, int present, int escaped) {
    int null = !present || b == a || (b == a + 1 && s[a] == '-');
    if (null) {
        c->nulls++;
    } else {
        c->validity[row >> 3] |= (uint8_t)(1u << (row & 7));
        if (!escaped || memchr(s + a, '\\', b - a) == NULL) {
#ifdef __SSE2__
            if (b - a <= PAD && a + PAD <= limit) { /* most fields: no call, the rest overwritten */
                __m128i x = _mm_loadu_si128((const __m128i *)(s + a));
                __m128i y = _mm_loadu_si128((const __m128i *)(s + a + 16));
                _mm_storeu_si128((__m128i *)(c->data + c->written), x);
                _mm_storeu_si128((__m128i *)(c->data + c->written + 16), y);
            } else
#endif
                memcpy(c->data + c->written, s + a, b - a);
            c->written += (Py_ssize_t)(b - a);
        } else {
            for (size_t i = a; i < b; i++) {
                if (escape_at(s, b, i)) i++;
                c->data[c->written++] = s[i];
            }
        }
    }
    c->offsets[row + 1] = (int32_t)c->written;
}

/* One line's fields appended: `ok`, whether the check matched it, and `matched`, how many
 * fields its walk matched (`spans`). A line that matched every field is read from those
 * spans: its delimiters are where the check found them (each field is followed by a space
 * or the end; no bare word holds a quote, a quoted field ends at its first unescaped quote,
 * read left to right as the split reads it), so the walk by position would find the same. */
static void append_line(const uint8_t *s, size_t n, size_t limit, const Field *fields,
                        int count, int ok, int matched, Span *spans, Column *columns,
                        Py_ssize_t row) {
    int escaped = 0;
    if (!ok) {
        for (int f = 0; f < count; f++) spans[f].start = -1;
    } else if (matched == count) {
        escaped = memchr(s, '\\', n) != NULL;
    } else {
        escaped = read_line(s, n, limit, fields, count, spans);
    }
    for (int f = 0; f < count; f++) {
        const Span *span = &spans[f];
        int present = span->start >= 0 && span->end >= 0;
        size_t a = present ? (size_t)span->start : 0, b = present ? (size_t)span->end : 0;
        append(&columns[f], row, s, limit, a, b, present && !span->null_word, escaped);
    }
}

static int64_t offset_at(const int32_t *offsets, Py_ssize_t i) { return offsets[i]; }

/* Whether the slice's offsets and validity fit their buffers (a ValueError if not): every
 * offset read later is one of these, checked here. */
static int check_slice(const Py_buffer *off, const Py_buffer *data, Py_ssize_t start,
                       Py_ssize_t length, const Py_buffer *valid) {
    if (start < 0 || length < 0 || off->len / 4 < start + length + 1 ||
        (valid->len != 0 && valid->len != length)) {
        PyErr_SetString(PyExc_ValueError, "offsets or validity do not fit the slice");
        return -1;
    }
    const int32_t *o = (const int32_t *)off->buf;
    for (Py_ssize_t r = start; r <= start + length; r++)
        if (o[r] < 0 || o[r] > data->len || (r > start && o[r] < o[r - 1])) {
            PyErr_SetString(PyExc_ValueError, "offsets outside the data");
            return -1;
        }
    return 0;
}

/* Each column's room for its text: what the first SAMPLE lines give it, scaled to all of
 * them, a quarter over, never more than the whole input (`total`) and PAD. The columns grow
 * when a line might not fit (a field is never longer than its line). Why: sized to the
 * input, the columns of an ALB batch had asked for 30 times its size, and grown from a
 * guess, they copied themselves as they grew. */
static void size_columns(const uint8_t *data, Py_ssize_t data_len, const int32_t *o,
                         Py_ssize_t start, Py_ssize_t length, const uint8_t *v, int has_valid,
                         const Field *fields, int count, int required, Py_ssize_t total,
                         Py_ssize_t *capacity) {
    Py_ssize_t sizes[MAX_FIELDS] = {0}, sampled = length < SAMPLE ? length : SAMPLE;
    Span spans[MAX_FIELDS];
    for (Py_ssize_t r = 0; r < sampled; r++) {
        const uint8_t *s = data + o[start + r];
        size_t n = (size_t)(o[start + r + 1] - o[start + r]);
        size_t limit = (size_t)(data_len - o[start + r]);
        int matched = 0;
        if (has_valid && !v[r]) continue;
        if (!line_ok(s, n, limit, fields, count, required, spans, &matched)) continue;
        if (matched < count) read_line(s, n, limit, fields, count, spans);
        for (int f = 0; f < count; f++)
            if (spans[f].start >= 0 && spans[f].end >= 0)
                sizes[f] += spans[f].end - spans[f].start;
    }
    for (int f = 0; f < count; f++) {
        Py_ssize_t guess = sampled ? sizes[f] * length / sampled : 0;
        guess += guess / 4;
        capacity[f] = (guess < total ? guess : total) + PAD;
    }
}

PyDoc_STRVAR(split_doc,
"split(offsets, data, start, length, valid, spec, required) -> (ok, fields)\n\n"
"A string column (Arrow buffers: int32 offsets, data; the slice start, length; valid: one\n"
"byte a row, 0 for a null, or b\"\" if none is null) read by the layout `spec` (one byte a\n"
"field: 'q' quoted, '1'..'9' that many bare words) whose first `required` fields must be\n"
"there. ok: one byte a row, 1 where the check pattern matches. fields: per field\n"
"(validity bitmap, int32 offsets, data, null count), a string column's buffers.");

static PyObject *split(PyObject *self, PyObject *args) {
    Py_buffer off, data, valid;
    Py_ssize_t start, length, spec_len;
    const char *spec;
    int required;
    if (!PyArg_ParseTuple(args, "y*y*nny*s#i", &off, &data, &start, &length, &valid, &spec,
                          &spec_len, &required))
        return NULL;
    Field fields[MAX_FIELDS];
    Column columns[MAX_FIELDS];
    memset(columns, 0, sizeof(columns));
    int count = (int)spec_len;
    PyObject *ok_obj = NULL, *result = NULL, *list = NULL;
    if (count < 1 || count > MAX_FIELDS || required < 1 || required > count) {
        PyErr_SetString(PyExc_ValueError, "a layout has 1 to 64 fields, 1 or more required");
        goto done;
    }
    Py_ssize_t piece = 0, word = 0;
    for (int f = 0; f < count; f++) {
        char c = spec[f];
        if (c != 'q' && (c < '1' || c > '9')) {
            PyErr_SetString(PyExc_ValueError, "a field is 'q' or '1'..'9'");
            goto done;
        }
        fields[f].quoted = c == 'q';
        fields[f].words = c == 'q' ? 1 : c - '0';
        if (c == 'q') {
            fields[f].piece = piece + 1, fields[f].word = -1;
            piece += 2, word = 1; /* the next piece starts with the separating space */
        } else {
            fields[f].piece = piece, fields[f].word = word;
            word += fields[f].words;
        }
    }
    if (check_slice(&off, &data, start, length, &valid) < 0) goto done;
    const int32_t *o = (const int32_t *)off.buf;
    Py_ssize_t total = (Py_ssize_t)(offset_at(o, start + length) - offset_at(o, start));
    Py_ssize_t capacity[MAX_FIELDS];
    const uint8_t *v = (const uint8_t *)valid.buf;
    size_columns((const uint8_t *)data.buf, data.len, o, start, length, v, valid.len != 0,
                 fields, count, required, total, capacity);
    ok_obj = PyBytes_FromStringAndSize(NULL, length);
    if (!ok_obj) goto done;
    for (int f = 0; f < count; f++) {
        Column *c = &columns[f];
        c->capacity = capacity[f];
        c->offsets_obj = PyBytes_FromStringAndSize(NULL, (length + 1) * 4);
        c->data_obj = PyBytes_FromStringAndSize(NULL, c->capacity);
        c->validity_obj = PyBytes_FromStringAndSize(NULL, (length + 7) / 8);
        if (!c->offsets_obj || !c->data_obj || !c->validity_obj) goto done;
        c->offsets = (int32_t *)PyBytes_AS_STRING(c->offsets_obj);
        c->data = (uint8_t *)PyBytes_AS_STRING(c->data_obj);
        c->validity = (uint8_t *)PyBytes_AS_STRING(c->validity_obj);
        memset(c->validity, 0, (size_t)(length + 7) / 8);
        c->offsets[0] = 0;
    }
    uint8_t *oks = (uint8_t *)PyBytes_AS_STRING(ok_obj);
    int grown = 1;
    Py_ssize_t room = 0; /* at least this much room in every column (past PAD) */
    Span spans[MAX_FIELDS];
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < length && grown; r++) {
        const uint8_t *s = (const uint8_t *)data.buf + o[start + r];
        Py_ssize_t n = o[start + r + 1] - o[start + r];
        size_t limit = (size_t)(data.len - o[start + r]);
        int matched = 0;
        int ok = (valid.len == 0 || v[r]) &&
                 line_ok(s, (size_t)n, limit, fields, count, required, spans, &matched);
        oks[r] = (uint8_t)ok;
        if (ok && room < n) { /* some column may need to grow: see which */
            room = PY_SSIZE_T_MAX;
            for (int f = 0; f < count && grown; f++) {
                Column *c = &columns[f];
                if (c->capacity - c->written - PAD < n) {
                    Py_ssize_t want = c->written + n + PAD;
                    c->capacity = want > 2 * c->capacity ? want : 2 * c->capacity;
                    Py_BLOCK_THREADS /* the object allocator wants the GIL */
                    grown = _PyBytes_Resize(&c->data_obj, c->capacity) == 0;
                    Py_UNBLOCK_THREADS
                    if (grown) c->data = (uint8_t *)PyBytes_AS_STRING(c->data_obj);
                }
                if (c->capacity - c->written - PAD < room) room = c->capacity - c->written - PAD;
            }
        }
        if (!grown) break;
        append_line(s, (size_t)n, limit, fields, count, ok, matched, spans, columns, r);
        if (ok) room -= n; /* no column took more than the line */
    }
    Py_END_ALLOW_THREADS
    if (!grown) goto done;
    list = PyList_New(count);
    if (!list) goto done;
    for (int f = 0; f < count; f++) {
        Column *c = &columns[f];
        if (_PyBytes_Resize(&c->data_obj, c->written) < 0) goto done;
        PyObject *item = Py_BuildValue("(OOOn)", c->validity_obj, c->offsets_obj, c->data_obj,
                                       c->nulls);
        if (!item) goto done;
        PyList_SET_ITEM(list, f, item);
    }
    result = PyTuple_Pack(2, ok_obj, list);
done:
    for (int f = 0; f < MAX_FIELDS; f++) {
        Py_XDECREF(columns[f].offsets_obj);
        Py_XDECREF(columns[f].data_obj);
        Py_XDECREF(columns[f].validity_obj);
    }
    Py_XDECREF(ok_obj);
    Py_XDECREF(list);
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    PyBuffer_Release(&valid);
    return result;
}

PyDoc_STRVAR(cut_doc,
"cut(offsets, data, start, length, valid, separator) -> (lists, ends, text)\n\n"
"A string column (as split's) cut at each byte `separator`, as Arrow's split_pattern cuts\n"
"it: a list of pieces a line (a null line none), the separators dropped. lists: int32\n"
"offsets into the pieces, one a line and one more; ends: int32 offsets of the pieces'\n"
"text; text: their bytes.");

/* Why: Arrow's split_pattern built each line's list piece by piece, a third of a VPC Flow
 * parse; this is one memchr a piece into buffers sized by a first count. */
static PyObject *cut(PyObject *self, PyObject *args) {
    Py_buffer off, data, valid;
    Py_ssize_t start, length;
    int separator;
    if (!PyArg_ParseTuple(args, "y*y*nny*i", &off, &data, &start, &length, &valid, &separator))
        return NULL;
    PyObject *lists = NULL, *ends = NULL, *text = NULL, *result = NULL;
    if (separator < 0 || separator > 255) {
        PyErr_SetString(PyExc_ValueError, "the separator is one byte");
        goto done;
    }
    if (check_slice(&off, &data, start, length, &valid) < 0) goto done;
    const int32_t *o = (const int32_t *)off.buf;
    const uint8_t *base = (const uint8_t *)data.buf, *v = (const uint8_t *)valid.buf;
    Py_ssize_t pieces = 0, bytes = 0;
    for (Py_ssize_t r = 0; r < length; r++) {
        if (valid.len != 0 && !v[r]) continue;
        const uint8_t *s = base + o[start + r], *e = base + o[start + r + 1];
        pieces++, bytes += e - s;
        for (const uint8_t *p = s; (p = memchr(p, separator, (size_t)(e - p))) != NULL; p++)
            pieces++, bytes--;
    }
    if (pieces >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "more pieces than int32 offsets hold");
        goto done;
    }
    lists = PyBytes_FromStringAndSize(NULL, (length + 1) * 4);
    ends = PyBytes_FromStringAndSize(NULL, (pieces + 1) * 4);
    text = PyBytes_FromStringAndSize(NULL, bytes);
    if (!lists || !ends || !text) goto done;
    int32_t *list_at = (int32_t *)PyBytes_AS_STRING(lists), *end_at = (int32_t *)PyBytes_AS_STRING(ends);
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(text);
    Py_ssize_t piece = 0, written = 0;
    list_at[0] = end_at[0] = 0;
    for (Py_ssize_t r = 0; r < length; r++) {
        if (valid.len == 0 || v[r]) {
            const uint8_t *s = base + o[start + r], *e = base + o[start + r + 1];
            for (;;) {
                const uint8_t *p = memchr(s, separator, (size_t)(e - s));
                const uint8_t *stop = p ? p : e;
                memcpy(out + written, s, (size_t)(stop - s));
                written += stop - s;
                end_at[++piece] = (int32_t)written;
                if (!p) break;
                s = p + 1;
            }
        }
        list_at[r + 1] = (int32_t)piece;
    }
    result = PyTuple_Pack(3, lists, ends, text);
done:
    Py_XDECREF(lists);
    Py_XDECREF(ends);
    Py_XDECREF(text);
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    PyBuffer_Release(&valid);
    return result;
}

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS, split_doc},
    {"cut", cut, METH_VARARGS, cut_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fields",
    "Access log layouts read in one pass a line, and delimited lines cut, natively.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fields(void) {
    init_tables();
    return PyModule_Create(&module);
}
