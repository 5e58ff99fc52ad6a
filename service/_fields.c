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
 * Every byte may be hostile: offsets are checked against the data before any is read, and
 * a field's output is never longer than the line it came from. tests/pipeline/
 * test_fields.py holds `split` to the specification (hypothesis), tests/fuzz/
 * fuzz_scan_asan.py runs it under AddressSanitizer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_FIELDS 64

typedef struct {
    int quoted, words;       /* from the spec */
    Py_ssize_t piece, word;  /* where it is read: the piece, its first word (-1: quoted) */
} Field;

typedef struct {
    int32_t *offsets;
    uint8_t *data, *validity;
    PyObject *offsets_obj, *data_obj, *validity_obj;
    Py_ssize_t written, nulls;
} Column;

/* The bytes a walk stops at: in an unquoted piece (space, quote, backslash), in a quoted
 * one (quote, backslash), in a bare word (anything it may not hold), in the tail. */
static uint8_t stop_unquoted[256], stop_quoted[256], not_bare[256], not_tail[256];

static void init_tables(void) {
    stop_unquoted[' '] = stop_unquoted['"'] = stop_unquoted['\\'] = 1;
    stop_quoted['"'] = stop_quoted['\\'] = 1;
    not_bare[' '] = not_bare['"'] = not_bare[0x1d] = not_bare[0x1e] = 1;
    not_tail['\n'] = not_tail[0x1d] = not_tail[0x1e] = 1;
}

/* Where s[i] starts an escape (\\ or \"): the escape is two bytes. */
static int escape_at(const uint8_t *s, size_t n, size_t i) {
    return s[i] == '\\' && i + 1 < n && (s[i + 1] == '\\' || s[i + 1] == '"');
}


/* The end of a field matched at s[i] (the check pattern's), or -1. */
static Py_ssize_t match_field(const uint8_t *s, size_t n, size_t i, const Field *f) {
    if (f->quoted) {
        if (i >= n || s[i] != '"') return -1;
        for (i++; i < n; i++) {
            if (s[i] == '"') return (Py_ssize_t)i + 1;
            if (s[i] == 0x1d || s[i] == 0x1e) return -1;
            if (s[i] == '\\') {
                if (i + 1 >= n || s[i + 1] == 0x1d || s[i + 1] == 0x1e) return -1;
                i++;
            }
        }
        return -1;
    }
    for (int w = 0; w < f->words; w++) {
        if (w > 0) {
            if (i >= n || s[i] != ' ') return -1;
            i++;
        }
        size_t a = i;
        while (i < n && !not_bare[s[i]]) i++;
        if (i == a) return -1;
    }
    return (Py_ssize_t)i;
}

/* Whether the tail (?: [^\n\x1d\x1e]*)?$ matches s[i..n). */
static int tail_ok(const uint8_t *s, size_t n, size_t i) {
    if (i == n) return 1;
    if (s[i] != ' ') return 0;
    for (i++; i < n && !not_tail[s[i]];) i++;
    return i == n;
}

/* Whether the check pattern matches the line s[0..n). */
static int line_ok(const uint8_t *s, size_t n, const Field *fields, int count, int required) {
    size_t i = 0;
    for (int f = 0; f < count; f++) {
        if (f >= required && tail_ok(s, n, i)) return 1;
        if (f > 0) {
            if (i >= n || s[i] != ' ') return 0;
            i++;
        }
        Py_ssize_t end = match_field(s, n, i, &fields[f]);
        if (end < 0) return 0;
        i = (size_t)end;
    }
    return tail_ok(s, n, i);
}

/* Appends s[a..b) to the column, escapes read; or a null when absent or "-" or "". */
static void append(Column *c, Py_ssize_t row, const uint8_t *s, size_t a, size_t b, int present) {
    int null = !present || b == a || (b == a + 1 && s[a] == '-');
    if (null) {
        c->nulls++;
    } else {
        c->validity[row >> 3] |= (uint8_t)(1u << (row & 7));
        if (memchr(s + a, '\\', b - a) == NULL) {
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

/* Whether the token at word w of piece (-1: the quoted piece) is past field x's place. */
static int passed(const Field *x, Py_ssize_t piece, Py_ssize_t w) {
    return x->piece < piece || (x->piece == piece && !x->quoted && x->word + x->words - 1 < w);
}

/* One line's fields, by position (see the top): each field's span, or absent. */
static void read_line(const uint8_t *s, size_t n, const Field *fields, int count, int ok,
                      Column *columns, Py_ssize_t row) {
    Py_ssize_t start[MAX_FIELDS], end[MAX_FIELDS];
    int null_word[MAX_FIELDS];
    for (int f = 0; f < count; f++) start[f] = end[f] = -1, null_word[f] = 0;
    if (ok) {
        Py_ssize_t piece = 0, word = 0;
        size_t token = 0, i = 0;
        int f = 0;
        for (;;) {
            const uint8_t *stop = (piece & 1) ? stop_quoted : stop_unquoted;
            while (i < n && !stop[s[i]]) i++;
            if (i < n && s[i] == '\\') {
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
                    if (x->quoted || w == x->word) start[f] = (Py_ssize_t)token;
                    if (i == token || (i == token + 1 && s[token] == '-')) null_word[f] = 1;
                    if (x->quoted || w == x->word + x->words - 1) end[f] = (Py_ssize_t)i, f++;
                }
            }
            if (i >= n || f >= count) break;
            if (quote) piece++, word = 0;
            else word++;
            token = ++i;
        }
    }
    for (int f = 0; f < count; f++) {
        int present = start[f] >= 0 && end[f] >= 0;
        size_t a = present ? (size_t)start[f] : 0, b = present ? (size_t)end[f] : 0;
        append(&columns[f], row, s, a, b, present && !null_word[f]);
    }
}

static int64_t offset_at(const int32_t *offsets, Py_ssize_t i) { return offsets[i]; }

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
    if (start < 0 || length < 0 || off.len / 4 < start + length + 1 ||
        (valid.len != 0 && valid.len != length)) {
        PyErr_SetString(PyExc_ValueError, "offsets or validity do not fit the slice");
        goto done;
    }
    const int32_t *o = (const int32_t *)off.buf;
    for (Py_ssize_t r = start; r <= start + length; r++)
        if (o[r] < 0 || o[r] > data.len || (r > start && o[r] < o[r - 1])) {
            PyErr_SetString(PyExc_ValueError, "offsets outside the data");
            goto done;
        }
    size_t total = (size_t)(offset_at(o, start + length) - offset_at(o, start));
    ok_obj = PyBytes_FromStringAndSize(NULL, length);
    if (!ok_obj) goto done;
    for (int f = 0; f < count; f++) {
        Column *c = &columns[f];
        c->offsets_obj = PyBytes_FromStringAndSize(NULL, (length + 1) * 4);
        c->data_obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        c->validity_obj = PyBytes_FromStringAndSize(NULL, (length + 7) / 8);
        if (!c->offsets_obj || !c->data_obj || !c->validity_obj) goto done;
        c->offsets = (int32_t *)PyBytes_AS_STRING(c->offsets_obj);
        c->data = (uint8_t *)PyBytes_AS_STRING(c->data_obj);
        c->validity = (uint8_t *)PyBytes_AS_STRING(c->validity_obj);
        memset(c->validity, 0, (size_t)(length + 7) / 8);
        c->offsets[0] = 0;
    }
    uint8_t *oks = (uint8_t *)PyBytes_AS_STRING(ok_obj);
    const uint8_t *v = (const uint8_t *)valid.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < length; r++) {
        const uint8_t *s = (const uint8_t *)data.buf + o[start + r];
        size_t n = (size_t)(o[start + r + 1] - o[start + r]);
        int ok = (valid.len == 0 || v[r]) && line_ok(s, n, fields, count, required);
        oks[r] = (uint8_t)ok;
        read_line(s, n, fields, count, ok, columns, r);
    }
    Py_END_ALLOW_THREADS
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

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS, split_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fields", "Access log layouts read in one pass a line, natively.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fields(void) {
    init_tables();
    return PyModule_Create(&module);
}
