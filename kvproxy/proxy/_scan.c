/*
 * Fast RESP framing for the proxy's hot path.
 *
 * The same two scanners as kvproxy/proxy/resp.py (scan_run, scan_replies),
 * with the same results for every input; resp.py is the reference and the
 * fallback when this module is not built. They only find boundaries: nothing
 * is decoded or copied, and nothing is allocated from a declared length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_HEADER_LEN 32
/* A header is a type byte, at most MAX_HEADER_LEN digits and CRLF. */
#define HEADER_WINDOW (MAX_HEADER_LEN + 3)
#define MAX_ARGS 2147483647LL
#define MAX_NAME 16
#define MAX_AGGREGATE (1LL << 40)

enum { STOP_DONE = 0, STOP_INCOMPLETE = 1, STOP_SPECIAL = 2, STOP_INLINE = 3, STOP_ERROR = 4 };

/* Offset of the CRLF ending the header that starts at p, or -1 if none yet. */
static Py_ssize_t find_crlf(const char *buf, Py_ssize_t p, Py_ssize_t n, Py_ssize_t limit)
{
    Py_ssize_t stop = n - 1;
    if (limit >= 0 && p + limit < stop)
        stop = p + limit;
    for (Py_ssize_t i = p; i < stop; i++) {
        if (buf[i] == '\r' && buf[i + 1] == '\n')
            return i;
    }
    return -1;
}

/* Strict decimal, optional leading '-': what Redis' string2ll accepts. */
static int parse_len(const char *s, Py_ssize_t len, long long *out)
{
    int negative = 0;
    long long value = 0;
    if (len <= 0 || len > MAX_HEADER_LEN)
        return -1;
    if (*s == '-') {
        negative = 1;
        s++;
        len--;
        if (len == 0)
            return -1;
    }
    if (len > 18)
        return -1;
    /* No leading zero (so no "-0" either): "0" alone, as Redis' string2ll. */
    if (s[0] == '0' && (len > 1 || negative))
        return -1;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        value = value * 10 + (s[i] - '0');
    }
    *out = negative ? -value : value;
    return 0;
}

static PyObject *result(Py_ssize_t end, Py_ssize_t count, int stop, const char *message)
{
    if (message == NULL)
        return Py_BuildValue("(nniO)", end, count, stop, Py_None);
    return Py_BuildValue("(nnis)", end, count, stop, message);
}

/*
 * The error for a byte where an argument's '$' should be, worded as resp.py
 * words it: chr() of the byte. The byte is a code point (0-255), not UTF-8 or
 * a C string, so NUL and bytes >= 0x80 give the same text as in Python
 * instead of a truncated message or a UnicodeDecodeError.
 */
static PyObject *expected_dollar(Py_ssize_t end, Py_ssize_t count, unsigned char got)
{
    PyObject *message = PyUnicode_FromFormat("expected '$', got '%c'", (int)got);
    if (message == NULL)
        return NULL;
    return Py_BuildValue("(nniN)", end, count, STOP_ERROR, message);
}

/*
 * An int argument as long long, saturated: resp.py compares lengths (at most
 * 18 digits) with any Python int, and every value beyond the range of long
 * long compares like its end of the range, so saturating keeps its answers.
 */
static int saturated_ll(PyObject *value, long long *out)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = overflow > 0 ? LLONG_MAX : overflow < 0 ? LLONG_MIN : v;
    return 0;
}

/* A negative offset would read before the buffer; callers only pass offsets into it. */
static int check_offset(Py_ssize_t pos)
{
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        return -1;
    }
    return 0;
}

/*
 * scan_run(buf, pos, max_bulk_len, special) -> (end, count, stop, message)
 *
 * Walks complete multibulk commands from pos whose upper-cased name is not in
 * `special` (a set of bytes; None means every command is special). buf[pos:end]
 * holds `count` such commands (empty ones included but not counted); `stop`
 * says what is at `end`.
 */
static PyObject *scan_run(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    long long max_bulk;
    PyObject *max_bulk_arg, *special;

    if (!PyArg_ParseTuple(args, "y*nOO", &view, &pos, &max_bulk_arg, &special))
        return NULL;
    if (check_offset(pos) < 0 || saturated_ll(max_bulk_arg, &max_bulk) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const char *buf = view.buf;
    Py_ssize_t n = view.len;
    Py_ssize_t count = 0;
    PyObject *out = NULL;

    while (pos < n) {
        Py_ssize_t start = pos;
        long long argc, size;
        if (buf[pos] != '*') {
            out = result(pos, count, STOP_INLINE, NULL);
            goto done;
        }
        Py_ssize_t nl = find_crlf(buf, pos, n, HEADER_WINDOW - 1);
        if (nl < 0) {
            if (n - pos >= HEADER_WINDOW) {
                out = result(start, count, STOP_ERROR, "invalid multibulk length");
                goto done;
            }
            out = result(start, count, STOP_INCOMPLETE, NULL);
            goto done;
        }
        if (parse_len(buf + pos + 1, nl - pos - 1, &argc) < 0 || argc > MAX_ARGS) {
            out = result(start, count, STOP_ERROR, "invalid multibulk length");
            goto done;
        }
        Py_ssize_t p = nl + 2;
        if (argc <= 0) {
            pos = p;
            continue;
        }
        int is_special = (special == Py_None);
        int complete = 1;
        for (long long i = 0; i < argc; i++) {
            if (p >= n) {
                complete = 0;
                break;
            }
            if (buf[p] != '$') {
                out = expected_dollar(start, count, (unsigned char)buf[p]);
                goto done;
            }
            nl = find_crlf(buf, p, n, HEADER_WINDOW - 1);
            if (nl < 0) {
                if (n - p >= HEADER_WINDOW) {
                    out = result(start, count, STOP_ERROR, "invalid bulk length");
                    goto done;
                }
                complete = 0;
                break;
            }
            if (parse_len(buf + p + 1, nl - p - 1, &size) < 0 || size < 0 || size > max_bulk) {
                out = result(start, count, STOP_ERROR, "invalid bulk length");
                goto done;
            }
            Py_ssize_t data = nl + 2;
            if ((long long)(n - data) < size + 2) {
                complete = 0;
                break;
            }
            p = data + (Py_ssize_t)size + 2;
            if (buf[p - 2] != '\r' || buf[p - 1] != '\n') {
                out = result(start, count, STOP_ERROR, "bulk string not terminated by CRLF");
                goto done;
            }
            if (i == 0 && !is_special && size <= MAX_NAME) {
                char upper[MAX_NAME];
                for (long long k = 0; k < size; k++) {
                    char c = buf[data + k];
                    upper[k] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
                }
                PyObject *name = PyBytes_FromStringAndSize(upper, (Py_ssize_t)size);
                if (name == NULL)
                    goto done;
                /* `in`, as resp.py asks: any container of names, not only a set. */
                int found = PySequence_Contains(special, name);
                Py_DECREF(name);
                if (found < 0)
                    goto done;
                is_special = found;
            }
        }
        if (!complete) {
            out = result(start, count, STOP_INCOMPLETE, NULL);
            goto done;
        }
        if (is_special) {
            out = result(start, count, STOP_SPECIAL, NULL);
            goto done;
        }
        count++;
        pos = p;
    }
    out = result(pos, count, STOP_DONE, NULL);
done:
    PyBuffer_Release(&view);
    return out;
}

/*
 * scan_replies(buf, pos, want, need, push) -> (end, replies, need, push, blob_left)
 *
 * Walks replies from pos, item by item, until `want` replies are complete or
 * the bytes run out, so the caller can pass on everything up to `end` at
 * once, even the first part of a reply still arriving. `need` > 0 on entry
 * resumes a reply that still needs that many items (`push`: it is a RESP3
 * push, which is skipped but not counted). On return, `need` and `push`
 * describe the reply left unfinished at `end`; `blob_left` > 0 says `end`
 * is inside a string payload that still needs that many bytes (its CRLF
 * included). Raises ValueError on a reply it cannot parse.
 */
static PyObject *scan_replies(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, want;
    long long need;
    int push;

    if (!PyArg_ParseTuple(args, "y*nnLp", &view, &pos, &want, &need, &push))
        return NULL;
    if (check_offset(pos) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* Every step takes at least one byte, so `need` drops by at most len(buf):
     * only a need no scan ever returns could wrap around. */
    if (need <= LLONG_MIN + view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "need out of range");
        return NULL;
    }
    const char *buf = view.buf;
    Py_ssize_t n = view.len;
    Py_ssize_t replies = 0;
    long long blob_left = 0;

    for (;;) {
        if (need == 0) {
            if (replies >= want || pos >= n)
                break;
            push = buf[pos] == '>';
            need = 1;
        }
        if (pos >= n)
            break;
        Py_ssize_t nl = find_crlf(buf, pos, n, -1);
        if (nl < 0)
            break;
        char kind = buf[pos];
        long long value = 0;
        if (kind == '$' || kind == '!' || kind == '=' || kind == '*' || kind == '~'
            || kind == '>' || kind == '%' || kind == '|') {
            if (parse_len(buf + pos + 1, nl - pos - 1, &value) < 0 || value > MAX_AGGREGATE) {
                PyBuffer_Release(&view);
                PyErr_SetString(PyExc_ValueError, "unparseable reply header");
                return NULL;
            }
        }
        need--;
        if ((kind == '$' || kind == '!' || kind == '=') && value >= 0) {
            Py_ssize_t data = nl + 2;
            if ((long long)(n - data) < value + 2) {
                blob_left = value + 2 - (long long)(n - data);
                pos = n;
                break;
            }
            pos = data + (Py_ssize_t)value + 2;
        } else {
            long long more = 0;
            if ((kind == '*' || kind == '~' || kind == '>') && value > 0)
                more = value;
            else if (kind == '%' || kind == '|')
                more = 2 * (value > 0 ? value : 0) + (kind == '|' ? 1 : 0);
            /* Python's int has no ceiling; past long long (some 2^22 headers of
             * 2^41 items each) the reply is refused rather than wrapped. */
            if (need > LLONG_MAX - more) {
                PyBuffer_Release(&view);
                PyErr_SetString(PyExc_ValueError, "reply declares too many items");
                return NULL;
            }
            need += more;
            pos = nl + 2;
        }
        if (need == 0 && !push)
            replies++;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnLNL)", pos, replies, need, PyBool_FromLong(push), blob_left);
}

static PyMethodDef methods[] = {
    {"scan_run", scan_run, METH_VARARGS, "Find the end of a run of ordinary commands."},
    {"scan_replies", scan_replies, METH_VARARGS, "Walk up to N replies, item by item."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "Fast RESP framing (see resp.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__scan(void)
{
    return PyModule_Create(&module);
}
