/*
 * Optional native Avro writer of ticks under schemas/tick.avsc, byte-identical to connector/serde/_tick.py
 * (and so to fastavro's schemaless_writer); the tests run both against fastavro. Two entry points feed the
 * one writer (put_tick): encode_tick takes a connector.kite.Tick, transcode a whole binary Kite message
 * (read by connector/kite/_packet.h, no Tick built). The field order comes from the layout generated into
 * connector/kite/_layout.h. Built at install time when a C compiler is present; Python is used otherwise.
 * Binary messages and prefixes must be `bytes`, whose content cannot change while they are read.
 *
 * It also holds the line arbiter in C (Arbiter: connector/arbiter.py's ArbiterPy, the reference), so that
 * transcode can arbitrate each packet by its tick id (connector/kite/_ids.h) before encoding it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>
#include "../kite/_ids.h"
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

/* ---- line arbitration: connector/arbiter.py's ArbiterPy in C, decision for decision ---- */

/* The tick ids one instrument's lines delivered, each with when (ms), oldest first: a ring of at most
 * per_token entries, as ArbiterPy's OrderedDict for the token. An open-addressing index (linear probing, at
 * most half full) finds an id in the ring in a probe or two. Each index entry holds the id itself beside
 * its ring slot, so probing, deleting and moving entries never read the ring: with a thousand instruments
 * the state of one is cold by the time its next tick comes, and each cache line a decision touches costs
 * more than the decision (perf showed the arbiter at a fifth of the connector's CPU with two lines). */
typedef struct {
    long long at;
    uint32_t id;
} Entry;

typedef struct {
    uint32_t token;
    uint32_t head, len, cap; /* the ring's oldest slot, its entries and its slots (at most MAX_PER_TOKEN) */
    uint32_t mask; /* index slots - 1 */
    Entry *ring; /* one allocation: cap entries, then the index; NULL where the table slot is free */
} Seen;

typedef struct {
    PyObject_HEAD
    long long window_ms;
    Py_ssize_t per_token;
    Seen *table; /* by token: open addressing, linear probing */
    Py_ssize_t size, tokens; /* slots (a power of two, or 0), slots used */
} Arbiter;

static PyTypeObject ArbiterType;
enum { MAX_PER_TOKEN = 1 << 24 }; /* ring slots + 1 fit the index's low 32 bits with room to spare */

/* Seen at ms `at`, now more than window ms ago; without overflow for any int64 pair. */
static inline int expired(long long now, long long at, long long window) {
    return now > at && (unsigned long long)now - (unsigned long long)at > (unsigned long long)window;
}

static inline uint32_t mix32(uint32_t h) { /* a token's low byte is its segment: spread every bit */
    h ^= h >> 16;
    h *= UINT32_C(0x85EBCA6B);
    h ^= h >> 13;
    h *= UINT32_C(0xC2B2AE35);
    return h ^ (h >> 16);
}

/* An index entry: the id in the high half, its ring slot + 1 in the low (0: a free entry). */
static inline uint64_t *index_of(const Seen *s) { return (uint64_t *)(s->ring + s->cap); }
static inline uint32_t entry_id(uint64_t e) { return (uint32_t)(e >> 32); }
static inline uint32_t entry_slot(uint64_t e) { return (uint32_t)e - 1; }

static int table_grow(Arbiter *a) {
    Py_ssize_t size = a->size ? 2 * a->size : 64;
    Seen *table = PyMem_Calloc((size_t)size, sizeof *table);
    if (!table) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < a->size; i++) {
        if (!a->table[i].ring) continue;
        size_t at = mix32(a->table[i].token) & (size_t)(size - 1);
        while (table[at].ring) at = (at + 1) & (size_t)(size - 1);
        table[at] = a->table[i];
    }
    PyMem_Free(a->table);
    a->table = table;
    a->size = size;
    return 0;
}

static void index_put(Seen *s, uint32_t slot) {
    uint64_t *ix = index_of(s);
    uint32_t id = s->ring[slot].id;
    size_t k = mix32(id) & s->mask;
    while (ix[k]) k = (k + 1) & s->mask;
    ix[k] = (uint64_t)id << 32 | (slot + 1);
}

/* The index entry of id, or -1. */
static Py_ssize_t index_find(const Seen *s, uint32_t id) {
    const uint64_t *ix = index_of(s);
    for (size_t k = mix32(id) & s->mask; ix[k]; k = (k + 1) & s->mask)
        if (entry_id(ix[k]) == id) return (Py_ssize_t)k;
    return -1;
}

/* Frees index entry k and moves back the entries after it that would no longer be found past the gap. */
static void index_delete(Seen *s, size_t k) {
    uint64_t *ix = index_of(s);
    for (size_t j = k;;) {
        j = (j + 1) & s->mask;
        if (!ix[j]) break;
        size_t home = mix32(entry_id(ix[j])) & s->mask;
        if (((j - home) & s->mask) >= ((j - k) & s->mask)) { /* the gap lies between home and j */
            ix[k] = ix[j];
            k = j;
        }
    }
    ix[k] = 0;
}

/* Slot of the i-th oldest entry. */
static inline uint32_t seen_slot(const Seen *s, uint32_t i) {
    uint32_t at = s->head + i;
    return at < s->cap ? at : at - s->cap;
}

static void index_rebuild(Seen *s) {
    memset(index_of(s), 0, ((size_t)s->mask + 1) * sizeof(uint64_t));
    for (uint32_t i = 0; i < s->len; i++) index_put(s, seen_slot(s, i));
}

static void seen_remove(Seen *s, uint32_t slot) { /* the newer entries close up; slots move: index again */
    for (uint32_t i = (slot + s->cap - s->head) % s->cap; i + 1 < s->len; i++)
        s->ring[seen_slot(s, i)] = s->ring[seen_slot(s, i + 1)];
    s->len--;
    index_rebuild(s);
}

static void seen_pop_oldest(Seen *s) {
    index_delete(s, (size_t)index_find(s, s->ring[s->head].id));
    s->head = s->head + 1 == s->cap ? 0 : s->head + 1;
    s->len--;
}

/* Room for more entries (up to most), the oldest first again, and an index at most half full. */
static int seen_grow(Seen *s, uint32_t most) {
    uint32_t cap = s->cap >= most / 2 ? most : (s->cap ? 2 * s->cap : (most < 8 ? most : 8));
    size_t slots = 16;
    while (slots < 2 * (size_t)cap) slots *= 2;
    Entry *ring = PyMem_Malloc((size_t)cap * sizeof *ring + slots * sizeof(uint64_t));
    if (!ring) { PyErr_NoMemory(); return -1; }
    for (uint32_t i = 0; i < s->len; i++) ring[i] = s->ring[seen_slot(s, i)];
    PyMem_Free(s->ring);
    s->ring = ring;
    s->mask = (uint32_t)(slots - 1);
    s->head = 0;
    s->cap = cap;
    index_rebuild(s);
    return 0;
}

/* The token's table slot: its entries, or the free slot where they would go. */
static Seen *seen_slot_of(const Arbiter *a, uint32_t token) {
    size_t mask = (size_t)a->size - 1, i = mix32(token) & mask;
    while (a->table[i].ring && a->table[i].token != token) i = (i + 1) & mask;
    return &a->table[i];
}

/* The token's entries (an empty ring the first time), or NULL on a memory error. */
static Seen *seen_of(Arbiter *a, uint32_t token) {
    if (2 * (a->tokens + 1) > a->size && table_grow(a) < 0) return NULL;
    Seen *s = seen_slot_of(a, token);
    if (!s->ring) {
        Seen fresh = {.token = token};
        if (seen_grow(&fresh, (uint32_t)a->per_token) < 0) return NULL;
        *s = fresh;
        a->tokens++;
    }
    return s;
}

/* ArbiterPy.first: 1 when the tick wins, 0 for a repeat within the window, -1 on a memory error. */
static int arbiter_first(Arbiter *a, uint32_t token, uint32_t id, long long now) {
    Seen *s = seen_of(a, token);
    if (!s) return -1;
    Py_ssize_t k = index_find(s, id);
    if (k >= 0) {
        uint32_t slot = entry_slot(index_of(s)[k]);
        if (!expired(now, s->ring[slot].at, a->window_ms)) return 0;
        seen_remove(s, slot); /* seen again after the window: it becomes the newest */
    }
    if (s->len == (uint32_t)a->per_token) seen_pop_oldest(s); /* ArbiterPy pops it right after adding the new id */
    else if (s->len == s->cap && seen_grow(s, (uint32_t)a->per_token) < 0) return -1;
    uint32_t slot = seen_slot(s, s->len++);
    s->ring[slot] = (Entry){.at = now, .id = id};
    index_put(s, slot);
    while (expired(now, s->ring[s->head].at, a->window_ms)) seen_pop_oldest(s); /* never the new id */
    return 1;
}

/* What the line arbiter given to transcode decides: this type's directly, any other's by its first(). */
static int arbitrate(PyObject *arbiter, uint32_t token, uint32_t id, long long now) {
    if (Py_IS_TYPE(arbiter, &ArbiterType)) return arbiter_first((Arbiter *)arbiter, token, id, now);
    PyObject *won = PyObject_CallMethod(arbiter, "first", "kkL", (unsigned long)token, (unsigned long)id, now);
    if (!won) return -1;
    int rc = PyObject_IsTrue(won);
    Py_DECREF(won);
    return rc;
}

static int as_u32(PyObject *v, uint32_t *out, const char *what) {
    long long n;
    if (as_long(v, &n) < 0) return -1;
    if (n < 0 || n > (long long)UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s must be in 0..2**32-1", what);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

static PyObject *Arbiter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"window_ms", "per_token", NULL};
    long long window = 5000;
    Py_ssize_t per_token = 256;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|Ln:Arbiter", names, &window, &per_token)) return NULL;
    if (window < 0 || per_token < 1 || per_token > MAX_PER_TOKEN) {
        PyErr_SetString(PyExc_ValueError, "window_ms must be >= 0 and per_token in 1..16777216");
        return NULL;
    }
    Arbiter *a = (Arbiter *)type->tp_alloc(type, 0);
    if (!a) return NULL;
    a->window_ms = window;
    a->per_token = per_token;
    return (PyObject *)a;
}

static void Arbiter_dealloc(PyObject *self) {
    Arbiter *a = (Arbiter *)self;
    for (Py_ssize_t i = 0; i < a->size; i++) PyMem_Free(a->table[i].ring);
    PyMem_Free(a->table);
    Py_TYPE(self)->tp_free(self);
}

/* first(token, tick_id, now_ms) -> bool */
static PyObject *Arbiter_first(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint32_t token, id;
    long long now;
    if (nargs != 3) { PyErr_SetString(PyExc_TypeError, "first(token, tick_id, now_ms)"); return NULL; }
    if (as_u32(args[0], &token, "token") < 0 || as_u32(args[1], &id, "tick_id") < 0 || as_long(args[2], &now) < 0)
        return NULL;
    int won = arbiter_first((Arbiter *)self, token, id, now);
    return won < 0 ? NULL : PyBool_FromLong(won);
}

static PyMethodDef Arbiter_methods[] = {
    {"first", (PyCFunction)(void (*)(void))Arbiter_first, METH_FASTCALL,
     "True for a tick no line delivered within the window (it wins); False for a repeat."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Arbiter_members[] = {
    {"window_ms", T_LONGLONG, offsetof(Arbiter, window_ms), READONLY, NULL},
    {"per_token", T_PYSSIZET, offsetof(Arbiter, per_token), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ArbiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "connector.serde._speedups.Arbiter",
    .tp_doc = "Line arbitration in C: remembers, per instrument, the tick ids seen in the last window_ms "
              "(at most per_token); connector.arbiter.ArbiterPy is the reference.",
    .tp_basicsize = sizeof(Arbiter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Arbiter_new,
    .tp_dealloc = Arbiter_dealloc,
    .tp_methods = Arbiter_methods,
    .tp_members = Arbiter_members,
};

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

/* 1 when the message is entirely well formed and has only tokens in tokens (NULL: any), else 0; -1 on
 * an error. Checked before anything is arbitrated: a message the generic path takes is arbitrated there. */
static int acceptable(const unsigned char *d, Py_ssize_t size, Py_ssize_t count, PyObject *tokens) {
    const unsigned char *p;
    Py_ssize_t off = 2;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (kite_next_packet(d, size, &off, &p) < 0) return 0;
        if (tokens) {
            PyObject *token = PyLong_FromUnsignedLong(kite_token(p));
            int subscribed = token ? PySet_Contains(tokens, token) : -1;
            Py_XDECREF(token);
            if (subscribed <= 0) return subscribed;
        }
    }
    return off == size;
}

/* (key, value, timestamp), or with_id (key, value, timestamp, tick_id): the record of a tick. */
static PyObject *record(long long token, const Buf *b, long long timestamp, int with_id, uint32_t id) {
    char key[24]; /* the token in decimal (record_key in _transcode.py) */
    int key_len = snprintf(key, sizeof key, "%lld", token);
    PyObject *out = PyTuple_New(with_id ? 4 : 3), *v;
    if (!out) return NULL;
#define ITEM(i, make) if (!(v = (make))) { Py_DECREF(out); return NULL; } PyTuple_SET_ITEM(out, i, v);
    ITEM(0, PyBytes_FromStringAndSize(key, key_len))
    ITEM(1, PyBytes_FromStringAndSize(b->p, b->len))
    ITEM(2, PyLong_FromLongLong(timestamp))
    if (with_id) { ITEM(3, PyLong_FromUnsignedLong(id)) }
#undef ITEM
    return out;
}

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

enum { BLOCK = 64 }; /* packets whose tick ids (and arbiter lines) transcode gets at once */

/* The tick ids of the n (at most BLOCK) packets from off. With the C arbiter, the cache lines its decisions
 * on them will read are asked for first, in waves: the tokens' table slots, then each instrument's index
 * entry for the id and its oldest entry, then that oldest entry's index entry (a full ring drops it). Each
 * wave reads what the one before asked for, so a block's misses overlap instead of queueing one behind
 * another: an instrument's entries are cold by the time its next tick comes. Nothing is written. */
static void block_ids(const unsigned char *d, Py_ssize_t size, Py_ssize_t off, Py_ssize_t n, uint32_t *ids,
                      const Arbiter *a) {
    uint32_t tokens[BLOCK];
    const Seen *seen[BLOCK];
    const unsigned char *p = NULL;
    int ask = a && a->size;
    for (Py_ssize_t i = 0; i < n; i++) {
        kite_next_packet(d, size, &off, &p); /* found by acceptable() */
        tokens[i] = kite_token(p);
        ids[i] = kite_tick_id(p, d + off - p);
        if (ask) PREFETCH(&a->table[mix32(tokens[i]) & (size_t)(a->size - 1)]);
    }
    if (!ask) return;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Seen *s = seen[i] = seen_slot_of(a, tokens[i]);
        if (!s->ring) continue;
        PREFETCH(&index_of(s)[mix32(ids[i]) & s->mask]);
        PREFETCH(&s->ring[s->head]);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const Seen *s = seen[i];
        if (s->ring && s->len == (uint32_t)a->per_token) PREFETCH(&index_of(s)[mix32(s->ring[s->head].id) & s->mask]);
    }
}


/* transcode(message, received_at_ms, prefix, window_ms, tokens, arbiter=None, ids=False)
   -> (records, ltp, quote, full, segments), or None when the message is not entirely well formed or has
   a token not in tokens (a set, or None for any): the caller then takes the generic path. With an arbiter,
   each packet's tick id goes to arbiter.first(token, id, received_at_ms) and only the ticks that win are
   records; with ids, each record ends with its tick id. transcode_py in connector/serde/_transcode.py is
   the reference, rules and return shape. */
static PyObject *transcode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs < 5 || nargs > 7 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2])
        || (args[4] != Py_None && !PyAnySet_Check(args[4]))) {
        PyErr_SetString(PyExc_TypeError, "transcode(message: bytes, received_at_ms: int, prefix: bytes, "
                                         "window_ms: int, tokens: set[int] | None, arbiter=None, ids=False)");
        return NULL;
    }
    long long received, window;
    if (as_long(args[1], &received) < 0 || as_long(args[3], &window) < 0) return NULL;
    PyObject *tokens = args[4] == Py_None ? NULL : args[4];
    PyObject *arbiter = nargs > 5 && args[5] != Py_None ? args[5] : NULL;
    int with_ids = nargs > 6 ? PyObject_IsTrue(args[6]) : 0;
    if (with_ids < 0) return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]), *p = NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]), count = kite_packet_count(d, size), off = 2, won = 0;
    if (count <= 0) Py_RETURN_NONE;
    int ok = acceptable(d, size, count, tokens);
    if (ok <= 0) return ok < 0 ? NULL : Py_NewRef(Py_None);
    Py_ssize_t prefix_len = PyBytes_GET_SIZE(args[2]);
    const char *prefix = PyBytes_AS_STRING(args[2]);
    PyObject *records = PyList_New(count);
    if (!records) return NULL;
    Py_ssize_t modes[KITE_MODES] = {0};
    unsigned long long segments[4] = {0};
    uint32_t ids[BLOCK];
    const Arbiter *native = arbiter && Py_IS_TYPE(arbiter, &ArbiterType) ? (const Arbiter *)arbiter : NULL;
    Buf b = {.len = 0, .cap = sizeof b.local};
    b.p = b.local;
    for (Py_ssize_t i = 0; i < count; i++) {
        if ((arbiter || with_ids) && i % BLOCK == 0)
            block_ids(d, size, off, count - i < BLOCK ? count - i : BLOCK, ids, native);
        int kind = kite_next_packet(d, size, &off, &p); /* found by acceptable() */
        modes[kite_kind_mode(kind)]++;
        uint32_t id = arbiter || with_ids ? ids[i % BLOCK] : 0;
        if (arbiter) {
            int first = arbitrate(arbiter, kite_token(p), id, received);
            if (first < 0) goto fail;
            if (!first) continue; /* another line delivered it: not even read */
        }
        kite_tick t;
        kite_read(p, kind, &t);
        b.len = 0;
        if (grow(&b, prefix_len) < 0) goto fail;
        memcpy(b.p, prefix, (size_t)prefix_len);
        b.len = prefix_len;
        if (put_tick(&b, &t, NULL, received) < 0) goto fail;
        segments[t.segment >> 6] |= 1ULL << (t.segment & 63);
        PyObject *item = record(t.i[KITE_F_INSTRUMENT_TOKEN], &b, record_timestamp(&t, received, window),
                                with_ids, id);
        if (!item) goto fail;
        PyList_SET_ITEM(records, won++, item);
    }
    if (b.p != b.local) PyMem_Free(b.p);
    if (won < count) { /* the slots after the winners are still empty (NULL) */
        PyObject *winners = PyList_GetSlice(records, 0, won);
        Py_SETREF(records, winners);
        if (!records) return NULL;
    }
    PyObject *mask = segment_mask(segments);
    if (!mask) { Py_DECREF(records); return NULL; }
    return Py_BuildValue("(NnnnN)", records, modes[KITE_MODE_LTP], modes[KITE_MODE_QUOTE],
                         modes[KITE_MODE_FULL], mask);
fail:
    if (b.p != b.local) PyMem_Free(b.p);
    Py_DECREF(records);
    return NULL;
}

/* use_crc_fold(on) -> bool */
static PyObject *use_crc_fold(PyObject *self, PyObject *on) {
    (void)self;
    int want = PyObject_IsTrue(on);
    return want < 0 ? NULL : PyBool_FromLong(kite_ids_fold(want));
}

static PyMethodDef methods[] = {
    {"encode_tick", (PyCFunction)(void (*)(void))encode_tick, METH_FASTCALL, "Avro binary of a Tick (no framing)."},
    {"transcode", (PyCFunction)(void (*)(void))transcode, METH_FASTCALL,
     "A binary Kite message to ([(key, framed Avro value, timestamp_ms[, tick_id])], ltp, quote, full,"
     " segments), the ticks an arbiter (if any) lets through; None if malformed or a token is not subscribed."},
    {"use_crc_fold", use_crc_fold, METH_O,
     "Tick ids fold with PCLMULQDQ if on and the CPU can (else the tables alone); whether they did before."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) {
    kite_ids_init();
    if (PyType_Ready(&ArbiterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddObjectRef(m, "Arbiter", (PyObject *)&ArbiterType) < 0) Py_CLEAR(m);
    return m;
}
