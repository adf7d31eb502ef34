/*
 * Optional native decoder of binary Kite messages into connector.kite.Tick records, identical to the
 * Python decoder in _binary.py (the tests compare both on random and mutated messages). Packets are read
 * by _packet.h from the layout generated into _layout.h. It handles well-formed messages only and returns
 * None otherwise, so errors are always reported by the Python decoder. It takes `bytes` only: their content
 * cannot change while it is read, unlike a bytearray's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_packet.h"

/* Tick.depth: the levels as the packet has them, each level's fields in KITE_DEPTH_LEVEL order. */
static PyObject *depth_tuple(const unsigned char *depth) {
    PyObject *out = PyTuple_New(2 * KITE_DEPTH_LEVELS * KITE_DEPTH_LEVEL_FIELDS);
    if (!out) return NULL;
    for (int level = 0; level < 2 * KITE_DEPTH_LEVELS; level++) {
        const unsigned char *l = depth + KITE_DEPTH_LEVEL_SIZE * level;
        Py_ssize_t at = (Py_ssize_t)KITE_DEPTH_LEVEL_FIELDS * level;
        PyObject *v;
#define LEVEL_U32(at_) PyLong_FromUnsignedLong(kite_be32(l + (at_)))
#define LEVEL_PRICE(at_) LEVEL_U32(at_) /* kept as the packet's integer */
#define LEVEL_U16(at_) PyLong_FromUnsignedLong(kite_be16(l + (at_)))
#define LEVEL(F, kind, at_, index) \
        if (!(v = LEVEL_##kind(at_))) { Py_DECREF(out); return NULL; } \
        PyTuple_SET_ITEM(out, at + (index), v);
        KITE_DEPTH_LEVEL(LEVEL)
    }
    return out;
}

/* Tick field F of t as a Python object; NULL with an exception set on failure. */
#define OBJ_LONG(F) PyLong_FromLongLong(t.i[KITE_F_##F])
#define OBJ_OPT_LONG(F) OBJ_LONG(F)
#define OBJ_DOUBLE(F) PyFloat_FromDouble(t.d[KITE_F_##F])
#define OBJ_OPT_DOUBLE(F) OBJ_DOUBLE(F)
#define OBJ_MODE(F) Py_NewRef(PyTuple_GET_ITEM(modes, t.mode))
#define OBJ_BOOL(F) PyBool_FromLong((long)t.i[KITE_F_##F])
#define OBJ_DEPTH(F) depth_tuple(t.depth)
#define OBJ(F, type) \
    if (t.present & KITE_BIT(F) && !(f[KITE_F_##F] = OBJ_##type(F))) goto fail;

/* The Tick of packet p, of the given kind; fields it does not carry are None. */
static PyObject *tick(PyTypeObject *cls, PyObject *modes, const unsigned char *p, int kind) {
    kite_tick t;
    kite_read(p, kind, &t);
    PyObject *f[KITE_F_COUNT] = {0};
    KITE_TICK_FIELDS(OBJ)
    PyObject *items = PyTuple_New(KITE_F_COUNT);
    if (!items) goto fail;
    for (int i = 0; i < KITE_F_COUNT; i++) PyTuple_SET_ITEM(items, i, f[i] ? f[i] : Py_NewRef(Py_None));
    /* tuple.__new__(Tick, items): a Tick instance without running its argument parsing. */
    PyObject *args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (!args) return NULL;
    PyObject *out = PyTuple_Type.tp_new(cls, args, NULL);
    Py_DECREF(args);
    return out;
fail:
    for (int i = 0; i < KITE_F_COUNT; i++) Py_XDECREF(f[i]);
    return NULL;
}

/* decode(message, Tick, (ltp, quote, full)) -> [Tick] or None when anything is malformed. */
static PyObject *decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyType_Check(args[1])
        || !PyType_IsSubtype((PyTypeObject *)args[1], &PyTuple_Type)
        || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != KITE_MODES) {
        PyErr_SetString(PyExc_TypeError, "decode(message: bytes, Tick: tuple subclass, (ltp, quote, full))");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]), *p;
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]), count = kite_packet_count(d, size), off = 2;
    if (count < 0) Py_RETURN_NONE;
    PyObject *out = PyList_New(count);
    if (!out) return NULL;
    /* One pass: a malformed message drops the ticks built so far. */
    for (Py_ssize_t i = 0; i < count; i++) {
        int kind = kite_next_packet(d, size, &off, &p);
        if (kind < 0) goto malformed;
        PyObject *t = tick((PyTypeObject *)args[1], args[2], p, kind);
        if (!t) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, i, t);
    }
    if (off == size) return out;
malformed:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "Ticks of a well-formed binary Kite message, or None (the Python decoder reports the faults)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
