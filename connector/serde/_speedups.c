/*
 * Optional native encoder of connector.kite.Tick into Avro binary under schemas/tick.avsc.
 * Byte-identical to connector/serde/_tick.py (and so to fastavro's schemaless_writer); the tests run
 * both against fastavro. Built at install time when a C compiler is present; Python is used otherwise.
 * Binary messages and prefixes must be `bytes`, whose content cannot change while they are read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Tick field positions (connector/kite/_records.py). */
enum { F_TOKEN, F_MODE, F_TRADABLE, F_LAST, F_LTQ, F_ATP, F_VOL, F_TBQ, F_TSQ, F_OPEN, F_HIGH, F_LOW,
       F_CLOSE, F_NET, F_PCT, F_LTT, F_OI, F_OIH, F_OIL, F_ETS, F_DEPTH, F_COUNT };

/* CPython requires IEEE 754 doubles; Avro writes them little-endian. */
_Static_assert(sizeof(double) == 8 && sizeof(uint64_t) == 8, "IEEE 754 binary64 doubles expected");

typedef struct { char *p; Py_ssize_t len, cap; char local[768]; } Buf;

static int grow(Buf *b, Py_ssize_t need) {
    if (b->len + need <= b->cap) return 0;
    Py_ssize_t cap = (b->cap + need) * 2;
    char *p = (b->p == b->local) ? PyMem_Malloc(cap) : PyMem_Realloc(b->p, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    if (b->p == b->local) memcpy(p, b->local, b->len);
    b->p = p; b->cap = cap;
    return 0;
}

static int put_byte(Buf *b, unsigned char c) {
    if (grow(b, 1) < 0) return -1;
    b->p[b->len++] = (char)c;
    return 0;
}

static int put_varint(Buf *b, unsigned long long z) {
    if (grow(b, 10) < 0) return -1;
    while (z >= 0x80) { b->p[b->len++] = (char)((z & 0x7F) | 0x80); z >>= 7; }
    b->p[b->len++] = (char)z;
    return 0;
}

static int put_long(Buf *b, PyObject *v) {
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) { PyErr_SetString(PyExc_OverflowError, "value does not fit an Avro long"); return -1; }
    if (n == -1 && PyErr_Occurred()) return -1;
    return put_varint(b, ((unsigned long long)n << 1) ^ (unsigned long long)(n >> 63));
}

static void pack_double(char *out, double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    for (int i = 0; i < 8; i++) out[i] = (char)(u >> (8 * i));
}

static int put_double_value(Buf *b, double d) {
    if (grow(b, 8) < 0) return -1;
    pack_double(b->p + b->len, d);
    b->len += 8;
    return 0;
}

static int put_double(Buf *b, PyObject *v) {
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) return -1;
    return put_double_value(b, d);
}

static int put_opt(Buf *b, PyObject *v, int is_double) {
    if (v == Py_None) return put_byte(b, 0);
    if (put_byte(b, 2) < 0) return -1;
    return is_double ? put_double(b, v) : put_long(b, v);
}

static const char *exchange_of(long seg) {
    switch (seg) {
    case 1: return "NSE"; case 2: return "NFO"; case 3: return "CDS"; case 4: return "BSE"; case 5: return "BFO";
    case 6: return "BCD"; case 7: return "MCX"; case 8: return "MCXSX"; case 9: return "INDICES"; case 12: return "NCO";
    default: return NULL;
    }
}

static int put_depth_side(Buf *b, PyObject *raw, Py_ssize_t start, Py_ssize_t levels, PyObject *divisor) {
    if (put_byte(b, 2) < 0) return -1;
    if (levels) {
        if (put_varint(b, (unsigned long long)levels << 1) < 0) return -1;
        for (Py_ssize_t i = start; i < start + 3 * levels; i += 3) {
            if (put_long(b, PyTuple_GET_ITEM(raw, i)) < 0) return -1;
            PyObject *price = PyNumber_TrueDivide(PyTuple_GET_ITEM(raw, i + 1), divisor);
            if (!price) return -1;
            int rc = put_double(b, price);
            Py_DECREF(price);
            if (rc < 0 || put_long(b, PyTuple_GET_ITEM(raw, i + 2)) < 0) return -1;
        }
    }
    return put_byte(b, 0);
}

static int encode(Buf *b, PyObject *t, PyObject *received) {
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != F_COUNT) {
        PyErr_SetString(PyExc_TypeError, "expected a connector.kite.Tick");
        return -1;
    }
    PyObject *token = PyTuple_GET_ITEM(t, F_TOKEN);
    long long tok = PyLong_AsLongLong(token);
    if (tok == -1 && PyErr_Occurred()) return -1;
    long seg = (long)(tok & 0xFF);
    double div = seg == 3 ? 1e7 : (seg == 6 || seg == 12) ? 1e4 : 100.0;
    if (put_long(b, token) < 0) return -1;
    char fallback[24];
    const char *exchange = exchange_of(seg);
    if (!exchange) { snprintf(fallback, sizeof fallback, "SEGMENT_%ld", seg); exchange = fallback; }
    size_t n = strlen(exchange);
    if (put_varint(b, (unsigned long long)n << 1) < 0 || grow(b, (Py_ssize_t)n) < 0) return -1;
    memcpy(b->p + b->len, exchange, n);
    b->len += (Py_ssize_t)n;
    if (put_varint(b, (unsigned long long)seg << 1) < 0) return -1;
    PyObject *mode = PyTuple_GET_ITEM(t, F_MODE);
    int m = !PyUnicode_Check(mode) ? -1 /* the comparisons below are defined for str only */
          : PyUnicode_CompareWithASCIIString(mode, "ltp") == 0 ? 0
          : PyUnicode_CompareWithASCIIString(mode, "quote") == 0 ? 1
          : PyUnicode_CompareWithASCIIString(mode, "full") == 0 ? 2 : -1;
    if (m < 0) { PyErr_SetString(PyExc_ValueError, "mode must be ltp, quote or full"); return -1; }
    int tradable = PyObject_IsTrue(PyTuple_GET_ITEM(t, F_TRADABLE));
    if (tradable < 0) return -1;
    if (put_byte(b, (unsigned char)(m << 1)) < 0 || put_byte(b, (unsigned char)tradable) < 0) return -1;
    if (put_double_value(b, div) < 0 || put_double(b, PyTuple_GET_ITEM(t, F_LAST)) < 0) return -1;
    static const int kinds[] = {0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}; /* F_LTQ..F_ETS: 1 = double */
    for (int f = F_LTQ; f <= F_ETS; f++)
        if (put_opt(b, PyTuple_GET_ITEM(t, f), kinds[f - F_LTQ]) < 0) return -1;
    PyObject *raw = PyTuple_GET_ITEM(t, F_DEPTH);
    if (raw == Py_None) {
        if (put_byte(b, 0) < 0 || put_byte(b, 0) < 0) return -1;
    } else {
        if (!PyTuple_Check(raw)) { PyErr_SetString(PyExc_TypeError, "depth must be a tuple"); return -1; }
        Py_ssize_t levels = PyTuple_GET_SIZE(raw) / 6;
        PyObject *divisor = PyFloat_FromDouble(div);
        if (!divisor) return -1;
        int rc = put_depth_side(b, raw, 0, levels, divisor);
        if (rc == 0) rc = put_depth_side(b, raw, 3 * levels, levels, divisor);
        Py_DECREF(divisor);
        if (rc < 0) return -1;
    }
    return put_long(b, received);
}

static PyObject *encode_tick(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "encode_tick(tick, received_at_ms)"); return NULL; }
    Buf b = {.len = 0, .cap = sizeof b.local};
    b.p = b.local;
    PyObject *out = encode(&b, args[0], args[1]) < 0 ? NULL : PyBytes_FromStringAndSize(b.p, b.len);
    if (b.p != b.local) PyMem_Free(b.p);
    return out;
}

/* ---- transcode: a whole binary Kite message straight to framed Avro values, no Tick objects ---- */

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static int put_str(Buf *b, const char *s) {
    size_t n = strlen(s);
    if (put_varint(b, (unsigned long long)n << 1) < 0 || grow(b, (Py_ssize_t)n) < 0) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += (Py_ssize_t)n;
    return 0;
}

static void raw_varint(Buf *b, unsigned long long z) { /* caller reserved room */
    while (z >= 0x80) { b->p[b->len++] = (char)((z & 0x7F) | 0x80); z >>= 7; }
    b->p[b->len++] = (char)z;
}
static void raw_long(Buf *b, long long n) { raw_varint(b, ((unsigned long long)n << 1) ^ (unsigned long long)(n >> 63)); }
static void raw_double(Buf *b, double d) { pack_double(b->p + b->len, d); b->len += 8; }
static void raw_some_long(Buf *b, long long n) { b->p[b->len++] = 2; raw_long(b, n); }
static void raw_some_double(Buf *b, double d) { b->p[b->len++] = 2; raw_double(b, d); }
static void raw_null(Buf *b, int n) { while (n--) b->p[b->len++] = 0; }

/* One packet (length already checked) → Avro body appended to b; mirrors kite/_binary.py + _tick.py. */
static int transcode_packet(Buf *b, const unsigned char *p, Py_ssize_t len, long long received, long long *ts) {
    uint32_t token = be32(p);
    long seg = (long)(token & 0xFF);
    double div = seg == 3 ? 1e7 : (seg == 6 || seg == 12) ? 1e4 : 100.0;
    char fallback[24];
    const char *exchange = exchange_of(seg);
    if (!exchange) { snprintf(fallback, sizeof fallback, "SEGMENT_%ld", seg); exchange = fallback; }
    if (grow(b, 700) < 0) return -1;
    raw_long(b, token);
    if (put_str(b, exchange) < 0) return -1;
    raw_long(b, seg);
    int mode = len == 8 ? 0 : (len == 28 || len == 44) ? 1 : 2;
    b->p[b->len++] = (char)(mode << 1);
    b->p[b->len++] = seg != 9;
    double last = be32(p + 4) / div;
    raw_double(b, div);
    raw_double(b, last);
    *ts = -1;
    if (len == 8) { raw_null(b, 18); raw_long(b, received); return 0; }
    if (len == 28 || len == 32) {
        double high = be32(p + 8) / div, low = be32(p + 12) / div, open = be32(p + 16) / div;
        double close = be32(p + 20) / div;
        raw_null(b, 5);
        raw_some_double(b, open); raw_some_double(b, high); raw_some_double(b, low); raw_some_double(b, close);
        raw_some_double(b, last - close);
        raw_some_double(b, close != 0 ? (last - close) * 100 / close : 0.0);
        raw_null(b, 4);
        if (len == 32) { *ts = (long long)be32(p + 28) * 1000; raw_some_long(b, *ts); } else raw_null(b, 1);
        raw_null(b, 2);
        raw_long(b, received);
        return 0;
    }
    double close = be32(p + 40) / div;
    raw_some_long(b, be32(p + 8));
    raw_some_double(b, be32(p + 12) / div);
    raw_some_long(b, be32(p + 16)); raw_some_long(b, be32(p + 20)); raw_some_long(b, be32(p + 24));
    raw_some_double(b, be32(p + 28) / div); raw_some_double(b, be32(p + 32) / div);
    raw_some_double(b, be32(p + 36) / div); raw_some_double(b, close);
    raw_some_double(b, last - close);
    raw_some_double(b, close != 0 ? (last - close) * 100 / close : 0.0);
    if (len == 44) { raw_null(b, 7); raw_long(b, received); return 0; }
    raw_some_long(b, (long long)be32(p + 44) * 1000);
    raw_some_long(b, be32(p + 48)); raw_some_long(b, be32(p + 52)); raw_some_long(b, be32(p + 56));
    *ts = (long long)be32(p + 60) * 1000;
    raw_some_long(b, *ts);
    for (int side = 0; side < 2; side++) {
        b->p[b->len++] = 2;
        raw_long(b, 5);
        for (int i = 0; i < 5; i++) {
            const unsigned char *lvl = p + 64 + 60 * side + 12 * i;
            raw_long(b, be32(lvl));
            raw_double(b, be32(lvl + 4) / div);
            raw_long(b, ((uint32_t)lvl[8] << 8) | lvl[9]);
        }
        b->p[b->len++] = 0;
    }
    raw_long(b, received);
    return 0;
}

static int known_length(Py_ssize_t len) { return len == 8 || len == 28 || len == 32 || len == 44 || len == 184; }

/* transcode(message, received_at_ms, prefix[, window_ms, tokens]) -> ([(key, value, timestamp_ms)], ltp,
   quote, full), or None when the message is not entirely well formed, or has a token not in ``tokens`` (a
   set, or None for any): the caller then takes the generic path. The key is the token in decimal; the
   timestamp is the exchange's when the packet has a non-zero one within ``window_ms`` of receipt (any,
   when negative), else receipt. */
static PyObject *transcode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if ((nargs != 3 && nargs != 5) || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2])
        || (nargs == 5 && args[4] != Py_None && !PyAnySet_Check(args[4]))) {
        PyErr_SetString(PyExc_TypeError, "transcode(message: bytes, received_at_ms: int, prefix: bytes"
                                         "[, window_ms: int, tokens: set[int] | None])");
        return NULL;
    }
    long long received = PyLong_AsLongLong(args[1]);
    if (received == -1 && PyErr_Occurred()) return NULL;
    long long window = -1;
    PyObject *tokens = NULL;
    if (nargs == 5) {
        window = PyLong_AsLongLong(args[3]);
        if (window == -1 && PyErr_Occurred()) return NULL;
        tokens = args[4] == Py_None ? NULL : args[4];
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]), prefix_len = PyBytes_GET_SIZE(args[2]);
    const char *prefix = PyBytes_AS_STRING(args[2]);
    if (size < 2) Py_RETURN_NONE;
    Py_ssize_t count = (Py_ssize_t)d[0] << 8 | d[1];
    if (count == 0 || count > (size - 2) / 10) Py_RETURN_NONE; /* a packet takes 10 bytes or more */
    PyObject *records = PyList_New(count);
    if (!records) return NULL;
    Py_ssize_t modes[3] = {0, 0, 0}, off = 2;
    Buf b = {.len = 0, .cap = sizeof b.local};
    b.p = b.local;
    int malformed = 0;
    /* One pass: each length is read once; a malformed message drops the records built so far. */
    for (Py_ssize_t i = 0; i < count; i++) {
        if (off + 2 > size) { malformed = 1; break; }
        Py_ssize_t len = (Py_ssize_t)d[off] << 8 | d[off + 1];
        if (!known_length(len) || off + 2 + len > size) { malformed = 1; break; }
        const unsigned char *p = d + off + 2;
        if (tokens) {
            PyObject *token = PyLong_FromUnsignedLong((unsigned long)be32(p));
            if (!token) goto fail;
            int subscribed = PySet_Contains(tokens, token);
            Py_DECREF(token);
            if (subscribed < 0) goto fail;
            if (!subscribed) { malformed = 1; break; }
        }
        long long ts;
        b.len = 0;
        if (grow(&b, prefix_len) < 0) goto fail;
        memcpy(b.p, prefix, (size_t)prefix_len);
        b.len = prefix_len;
        if (transcode_packet(&b, p, len, received, &ts) < 0) goto fail;
        modes[len == 8 ? 0 : (len == 28 || len == 44) ? 1 : 2]++;
        char key[16]; /* the record key: the token in decimal */
        int key_len = snprintf(key, sizeof key, "%lu", (unsigned long)be32(p));
        long long stamp = ts > 0 ? ts : received;
        if (window >= 0 && (stamp - received > window || received - stamp > window)) stamp = received;
        PyObject *item = Py_BuildValue("(y#y#L)", key, (Py_ssize_t)key_len, b.p, b.len, stamp);
        if (!item) goto fail;
        PyList_SET_ITEM(records, i, item);
        off += 2 + len;
    }
    if (b.p != b.local) PyMem_Free(b.p);
    if (malformed || off != size) { Py_DECREF(records); Py_RETURN_NONE; }
    return Py_BuildValue("(Nnnn)", records, modes[0], modes[1], modes[2]);
fail:
    if (b.p != b.local) PyMem_Free(b.p);
    Py_DECREF(records);
    return NULL;
}

static PyMethodDef methods[] = {
    {"encode_tick", (PyCFunction)(void (*)(void))encode_tick, METH_FASTCALL, "Avro binary of a Tick (no framing)."},
    {"transcode", (PyCFunction)(void (*)(void))transcode, METH_FASTCALL,
     "A binary Kite message to [(token, framed Avro value, timestamp_ms)], ltp, quote, full; None if malformed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
