/*
 * Optional native Avro writer of ticks under schemas/tick.avsc, byte-identical to connector/serde/_tick.py
 * (and so to fastavro's schemaless_writer); the tests run both against fastavro. Two entry points feed the
 * one writer (put_tick): encode_tick takes a connector.kite.Tick, transcode a whole binary Kite message
 * (read by connector/kite/_packet.h, no Tick built). The field order comes from the layout generated into
 * connector/kite/_layout.h. Built at install time when a C compiler is present; Python is used otherwise.
 * Binary messages and prefixes must be `bytes`, whose content cannot change while they are read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include "../kite/_packet.h"

/* CPython requires IEEE 754 doubles; Avro writes them little-endian. */
_Static_assert(sizeof(double) == 8 && sizeof(uint64_t) == 8, "IEEE 754 binary64 doubles expected");

/* Room for a record and its framing prefix without a heap allocation. */
typedef struct { char *p; Py_ssize_t len, cap; char local[1024]; } Buf;

static int grow(Buf *b, Py_ssize_t need) {
    if (b->len + need <= b->cap) return 0;
    Py_ssize_t cap = (b->cap + need) * 2;
    char *p = (b->p == b->local) ? PyMem_Malloc(cap) : PyMem_Realloc(b->p, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    if (b->p == b->local) memcpy(p, b->local, b->len);
    b->p = p; b->cap = cap;
    return 0;
}

/* The w_ writers write at w, into room made with grow(), and return where they stopped. */
static inline char *w_varint(char *w, unsigned long long z) {
    while (z >= 0x80) { *w++ = (char)((z & 0x7F) | 0x80); z >>= 7; }
    *w++ = (char)z;
    return w;
}

static inline char *w_long(char *w, long long n) {
    return w_varint(w, ((unsigned long long)n << 1) ^ (unsigned long long)(n >> 63));
}

static inline char *w_double(char *w, double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    for (int i = 0; i < 8; i++) w[i] = (char)(u >> (8 * i));
    return w + 8;
}

/* ---- Python objects → plain values (encode_tick) ---- */

static int as_long(PyObject *v, long long *out) {
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) { PyErr_SetString(PyExc_OverflowError, "value does not fit an Avro long"); return -1; }
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int as_double(PyObject *v, double *out) {
    *out = PyFloat_AsDouble(v);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static int as_mode(PyObject *v, int *out) {
    static const char *const names[KITE_MODES] = KITE_MODE_NAMES;
    for (int m = 0; PyUnicode_Check(v) && m < KITE_MODES; m++) /* compared as str only */
        if (PyUnicode_CompareWithASCIIString(v, names[m]) == 0) { *out = m; return 0; }
    PyErr_SetString(PyExc_ValueError, "mode must be ltp, quote or full");
    return -1;
}

/* Tick field F (slot f) into t; an optional field that is None is left absent. */
#define FILL_LONG(F, v) if (as_long(v, &t->i[KITE_F_##F]) < 0) return -1;
#define FILL_DOUBLE(F, v) if (as_double(v, &t->d[KITE_F_##F]) < 0) return -1;
#define FILL_OPT_LONG(F, v) if (v != Py_None) { FILL_LONG(F, v) } else t->present &= ~KITE_BIT(F);
#define FILL_OPT_DOUBLE(F, v) if (v != Py_None) { FILL_DOUBLE(F, v) } else t->present &= ~KITE_BIT(F);
#define FILL_MODE(F, v) if (as_mode(v, &t->mode) < 0) return -1;
#define FILL_BOOL(F, v) if ((t->i[KITE_F_##F] = PyObject_IsTrue(v)) < 0) return -1;
#define FILL_DEPTH(F, v) \
    if (v == Py_None) t->present &= ~KITE_BIT(F); \
    else if (!PyTuple_Check(v)) { PyErr_SetString(PyExc_TypeError, "depth must be a tuple"); return -1; } \
    else *depth = v;
#define FILL(F, type) { PyObject *v = PyTuple_GET_ITEM(tick, KITE_F_##F); FILL_##type(F, v) }

/* The values of a Tick; its depth, when it has one, stays the tuple, set in *depth. */
static int fill(kite_tick *t, PyObject **depth, PyObject *tick) {
    if (!PyTuple_Check(tick) || PyTuple_GET_SIZE(tick) != KITE_F_COUNT) {
        PyErr_SetString(PyExc_TypeError, "expected a connector.kite.Tick");
        return -1;
    }
    t->present = UINT32_MAX;
    t->depth = NULL;
    *depth = NULL;
    KITE_TICK_FIELDS(FILL)
    t->segment = (int)(t->i[KITE_F_INSTRUMENT_TOKEN] & 0xFF);
    t->seg = &KITE_SEGMENTS[t->segment];
    return 0;
}

/* ---- plain values → Avro (both entry points) ---- */

#define PUT_LEVEL_U32(at) w = w_long(w, kite_be32(l + (at)));
#define PUT_LEVEL_PRICE(at) w = w_double(w, kite_be32(l + (at)) / divisor);
#define PUT_LEVEL_U16(at) w = w_long(w, kite_be16(l + (at)));
#define PUT_LEVEL(F, kind, at, index) PUT_LEVEL_##kind(at)

/* One side of a packet's order book (depth): an array of its levels. */
static inline char *w_packet_side(char *w, const unsigned char *depth, double divisor, int side) {
    *w++ = 2;
    w = w_long(w, KITE_DEPTH_LEVELS);
    for (int i = 0; i < KITE_DEPTH_LEVELS; i++) {
        const unsigned char *l = depth + KITE_DEPTH_LEVEL_SIZE * (KITE_DEPTH_LEVELS * side + i);
        KITE_DEPTH_LEVEL(PUT_LEVEL)
    }
    *w++ = 0;
    return w;
}

#define PUT_ITEM_U32(v) if (as_long(v, &n) < 0) return -1; w = w_long(w, n);
#define PUT_ITEM_U16(v) PUT_ITEM_U32(v)
#define PUT_ITEM_PRICE(v) { /* int / float in Python's terms, as the Python encoder divides */ \
    PyObject *price = PyNumber_TrueDivide(v, divisor); \
    int rc = price ? as_double(price, &x) : -1; \
    Py_XDECREF(price); \
    if (rc < 0) return -1; \
    w = w_double(w, x); }
#define PUT_ITEM(F, kind, at, index) PUT_ITEM_##kind(PyTuple_GET_ITEM(raw, i + (index)))

/* The levels of a Tick's depth tuple from item start on. */
static int put_items(Buf *b, PyObject *raw, Py_ssize_t start, Py_ssize_t levels, PyObject *divisor) {
    for (Py_ssize_t i = start; i < start + KITE_DEPTH_LEVEL_FIELDS * levels; i += KITE_DEPTH_LEVEL_FIELDS) {
        long long n;
        double x;
        if (grow(b, 10 * KITE_DEPTH_LEVEL_FIELDS) < 0) return -1;
        char *w = b->p + b->len;
        KITE_DEPTH_LEVEL(PUT_ITEM)
        b->len = w - b->p;
    }
    return 0;
}

/* One side of a Tick's depth tuple (raw): len // 6 levels a side, as the Python encoder reads it. */
static int put_tuple_side(Buf *b, PyObject *raw, double divisor, int side) {
    Py_ssize_t levels = PyTuple_GET_SIZE(raw) / (2 * KITE_DEPTH_LEVEL_FIELDS);
    if (grow(b, 11) < 0) return -1;
    b->p[b->len++] = 2;
    if (levels) {
        b->len = w_varint(b->p + b->len, (unsigned long long)levels << 1) - b->p;
        PyObject *divisor_object = PyFloat_FromDouble(divisor);
        if (!divisor_object) return -1;
        int rc = put_items(b, raw, side * KITE_DEPTH_LEVEL_FIELDS * levels, levels, divisor_object);
        Py_DECREF(divisor_object);
        if (rc < 0 || grow(b, 1) < 0) return -1;
    }
    b->p[b->len++] = 0;
    return 0;
}

#define PUT_LONG(F) w = w_long(w, t->i[KITE_F_##F]);
#define PUT_OPT_LONG(F) \
    if (present & KITE_BIT(F)) { *w++ = 2; w = w_long(w, t->i[KITE_F_##F]); } else *w++ = 0;
#define PUT_DOUBLE(F) w = w_double(w, t->d[KITE_F_##F]);
#define PUT_OPT_DOUBLE(F) \
    if (present & KITE_BIT(F)) { *w++ = 2; w = w_double(w, t->d[KITE_F_##F]); } else *w++ = 0;
#define PUT_EXCHANGE(F) \
    w = w_varint(w, (unsigned long long)t->seg->name_len << 1); \
    memcpy(w, t->seg->name, (size_t)t->seg->name_len); \
    w += t->seg->name_len;
#define PUT_SEGMENT(F) w = w_long(w, t->segment);
#define PUT_MODE(F) *w++ = (char)(t->mode << 1);
#define PUT_BOOL(F) *w++ = t->i[KITE_F_##F] != 0;
#define PUT_DIVISOR(F) w = w_double(w, divisor);
#define PUT_SIDE(side) \
    if (t->depth) w = w_packet_side(w, t->depth, divisor, side); \
    else if (!depth) *w++ = 0; /* null */ \
    else { /* a Tick's tuple, of any length: then room for the rest again */ \
        b->len = w - b->p; \
        if (put_tuple_side(b, depth, divisor, side) < 0 || grow(b, KITE_RECORD_MAX_BYTES) < 0) return -1; \
        w = b->p + b->len; \
    }
#define PUT_DEPTH_BUY(F) PUT_SIDE(0)
#define PUT_DEPTH_SELL(F) PUT_SIDE(1)
#define PUT_RECEIVED(F) w = w_long(w, received);
#define PUT(writer, F) PUT_##writer(F)

/* The Avro body of the tick t appended to b; a Tick's depth comes from the tuple depth (or NULL). */
static int put_tick(Buf *b, const kite_tick *t, PyObject *depth, long long received) {
    if (grow(b, KITE_RECORD_MAX_BYTES) < 0) return -1;
    const uint32_t present = t->present;
    const double divisor = t->seg->divisor;
    char *w = b->p + b->len;
    KITE_RECORD(PUT)
    b->len = w - b->p;
    return 0;
}

/* encode_tick(tick, received_at_ms) -> bytes */
static PyObject *encode_tick(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "encode_tick(tick, received_at_ms)"); return NULL; }
    kite_tick t;
    PyObject *depth;
    long long received;
    if (fill(&t, &depth, args[0]) < 0 || as_long(args[1], &received) < 0) return NULL;
    Buf b = {.len = 0, .cap = sizeof b.local};
    b.p = b.local;
    PyObject *out = put_tick(&b, &t, depth, received) < 0 ? NULL : PyBytes_FromStringAndSize(b.p, b.len);
    if (b.p != b.local) PyMem_Free(b.p);
    return out;
}

/* The Kafka timestamp of a tick record: its exchange time when it has a non-zero one within window_ms of
 * the receipt, else the receipt. record_timestamp in connector/serde/_transcode.py is the reference. */
static long long record_timestamp(const kite_tick *t, long long received, long long window) {
    long long ts = t->present & KITE_BIT(EXCHANGE_TIMESTAMP_MS) ? t->i[KITE_F_EXCHANGE_TIMESTAMP_MS] : 0;
    if (ts == 0 || window < 0) return received;
    unsigned long long gap = ts > received ? (unsigned long long)ts - (unsigned long long)received
                                           : (unsigned long long)received - (unsigned long long)ts;
    return gap <= (unsigned long long)window ? ts : received;
}

/* Bit s of a Python int for each segment s in words. */
static PyObject *segment_mask(const unsigned long long words[4]) {
    if (!(words[1] | words[2] | words[3])) return PyLong_FromUnsignedLongLong(words[0]);
    char hex[65];
    snprintf(hex, sizeof hex, "%016llx%016llx%016llx%016llx", words[3], words[2], words[1], words[0]);
    return PyLong_FromString(hex, NULL, 16);
}

/* transcode(message, received_at_ms, prefix, window_ms, tokens) -> (records, ltp, quote, full, segments),
   or None when the message is not entirely well formed or has a token not in tokens (a set, or None for
   any): the caller then takes the generic path. transcode_py in connector/serde/_transcode.py is the
   reference, rules and return shape. */
static PyObject *transcode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2])
        || (args[4] != Py_None && !PyAnySet_Check(args[4]))) {
        PyErr_SetString(PyExc_TypeError, "transcode(message: bytes, received_at_ms: int, prefix: bytes, "
                                         "window_ms: int, tokens: set[int] | None)");
        return NULL;
    }
    long long received, window;
    if (as_long(args[1], &received) < 0 || as_long(args[3], &window) < 0) return NULL;
    PyObject *tokens = args[4] == Py_None ? NULL : args[4];
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]), *p;
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]), count = kite_packet_count(d, size), off = 2;
    if (count <= 0) Py_RETURN_NONE;
    Py_ssize_t prefix_len = PyBytes_GET_SIZE(args[2]);
    const char *prefix = PyBytes_AS_STRING(args[2]);
    PyObject *records = PyList_New(count);
    if (!records) return NULL;
    Py_ssize_t modes[KITE_MODES] = {0};
    unsigned long long segments[4] = {0};
    Buf b = {.len = 0, .cap = sizeof b.local};
    b.p = b.local;
    /* One pass: a malformed message drops the records built so far. */
    for (Py_ssize_t i = 0; i < count; i++) {
        int kind = kite_next_packet(d, size, &off, &p);
        if (kind < 0) { Py_CLEAR(records); break; }
        kite_tick t;
        kite_read(p, kind, &t);
        if (tokens) {
            PyObject *token = PyLong_FromLongLong(t.i[KITE_F_INSTRUMENT_TOKEN]);
            int subscribed = token ? PySet_Contains(tokens, token) : -1;
            Py_XDECREF(token);
            if (subscribed < 0) goto fail;
            if (!subscribed) { Py_CLEAR(records); break; }
        }
        b.len = 0;
        if (grow(&b, prefix_len) < 0) goto fail;
        memcpy(b.p, prefix, (size_t)prefix_len);
        b.len = prefix_len;
        if (put_tick(&b, &t, NULL, received) < 0) goto fail;
        modes[t.mode]++;
        segments[t.segment >> 6] |= 1ULL << (t.segment & 63);
        char key[24]; /* the record key: the token in decimal (record_key in _transcode.py) */
        int key_len = snprintf(key, sizeof key, "%lld", t.i[KITE_F_INSTRUMENT_TOKEN]);
        PyObject *item = Py_BuildValue("(y#y#L)", key, (Py_ssize_t)key_len, b.p, b.len,
                                       record_timestamp(&t, received, window));
        if (!item) goto fail;
        PyList_SET_ITEM(records, i, item);
    }
    if (b.p != b.local) PyMem_Free(b.p);
    if (records && off != size) Py_CLEAR(records);
    if (!records) Py_RETURN_NONE;
    PyObject *mask = segment_mask(segments);
    if (!mask) { Py_DECREF(records); return NULL; }
    return Py_BuildValue("(NnnnN)", records, modes[KITE_MODE_LTP], modes[KITE_MODE_QUOTE],
                         modes[KITE_MODE_FULL], mask);
fail:
    if (b.p != b.local) PyMem_Free(b.p);
    Py_DECREF(records);
    return NULL;
}

static PyMethodDef methods[] = {
    {"encode_tick", (PyCFunction)(void (*)(void))encode_tick, METH_FASTCALL, "Avro binary of a Tick (no framing)."},
    {"transcode", (PyCFunction)(void (*)(void))transcode, METH_FASTCALL,
     "A binary Kite message to ([(key, framed Avro value, timestamp_ms)], ltp, quote, full, segments); None if"
     " malformed or a token is not subscribed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
