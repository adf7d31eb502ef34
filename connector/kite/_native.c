/*
 * Optional native decoder of binary Kite messages into connector.kite.Tick records, identical to the
 * Python decoder in _binary.py (the tests compare both on random and mutated messages). It handles
 * well-formed messages only and returns None otherwise, so errors are always reported by the Python decoder.
 * It takes `bytes` only: their content cannot change while it is read, unlike a bytearray's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { N_FIELDS = 21, MIN_PACKET = 2 + 8 };

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static PyObject *u32(const unsigned char *p) { return PyLong_FromUnsignedLong(be32(p)); }
static PyObject *price(const unsigned char *p, double div) { return PyFloat_FromDouble(be32(p) / div); }
static PyObject *ms(const unsigned char *p) { return PyLong_FromLongLong((long long)be32(p) * 1000); }

static int known_length(Py_ssize_t len) { return len == 8 || len == 28 || len == 32 || len == 44 || len == 184; }

/* Field i of the Tick; a failed C-API call leaves its exception set and abandons the tick. */
#define SET(i, value) do { if (!(f[i] = (value))) goto fail; } while (0)

/* Fields in the order of connector.kite.Tick; NULL entries are None. len is a known_length. */
static PyObject *tick(PyTypeObject *cls, PyObject *modes, const unsigned char *p, Py_ssize_t len) {
    PyObject *f[N_FIELDS] = {0};
    uint32_t token = be32(p);
    long seg = (long)(token & 0xFF);
    double div = seg == 3 ? 1e7 : (seg == 6 || seg == 12) ? 1e4 : 100.0;
    int mode = len == 8 ? 0 : (len == 28 || len == 44) ? 1 : 2;
    double last = be32(p + 4) / div;
    SET(0, PyLong_FromUnsignedLong(token));
    f[1] = Py_NewRef(PyTuple_GET_ITEM(modes, mode));
    f[2] = PyBool_FromLong(seg != 9);
    SET(3, PyFloat_FromDouble(last));
    if (len == 28 || len == 32) {
        double close = be32(p + 20) / div;
        SET(9, price(p + 16, div)); SET(10, price(p + 8, div)); SET(11, price(p + 12, div));
        SET(12, PyFloat_FromDouble(close));
        SET(13, PyFloat_FromDouble(last - close));
        SET(14, close != 0 ? PyFloat_FromDouble((last - close) * 100 / close) : PyLong_FromLong(0));
        if (len == 32) SET(19, ms(p + 28));
    } else if (len != 8) {
        double close = be32(p + 40) / div;
        SET(4, u32(p + 8)); SET(5, price(p + 12, div)); SET(6, u32(p + 16)); SET(7, u32(p + 20));
        SET(8, u32(p + 24));
        SET(9, price(p + 28, div)); SET(10, price(p + 32, div)); SET(11, price(p + 36, div));
        SET(12, PyFloat_FromDouble(close));
        SET(13, PyFloat_FromDouble(last - close));
        SET(14, close != 0 ? PyFloat_FromDouble((last - close) * 100 / close) : PyLong_FromLong(0));
        if (len == 184) {
            SET(15, ms(p + 44)); SET(16, u32(p + 48)); SET(17, u32(p + 52)); SET(18, u32(p + 56));
            SET(19, ms(p + 60));
            SET(20, PyTuple_New(30));
            for (int i = 0; i < 10; i++) {
                const unsigned char *l = p + 64 + 12 * i;
                PyObject *level[3] = {u32(l), u32(l + 4), PyLong_FromLong(((long)l[8] << 8) | l[9])};
                for (int k = 0; k < 3; k++) PyTuple_SET_ITEM(f[20], 3 * i + k, level[k]);
                if (!level[0] || !level[1] || !level[2]) goto fail; /* the tuple frees what it holds */
            }
        }
    }
    PyObject *items = PyTuple_New(N_FIELDS);
    if (!items) goto fail;
    for (int i = 0; i < N_FIELDS; i++) PyTuple_SET_ITEM(items, i, f[i] ? f[i] : Py_NewRef(Py_None));
    /* tuple.__new__(Tick, items): a Tick instance without running its argument parsing. */
    PyObject *args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (!args) return NULL;
    PyObject *out = PyTuple_Type.tp_new(cls, args, NULL);
    Py_DECREF(args);
    return out;
fail:
    for (int i = 0; i < N_FIELDS; i++) Py_XDECREF(f[i]);
    return NULL;
}

/* decode(message, Tick, (ltp, quote, full)) -> [Tick] or None when anything is malformed. */
static PyObject *decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyType_Check(args[1])
        || !PyType_IsSubtype((PyTypeObject *)args[1], &PyTuple_Type)
        || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != 3) {
        PyErr_SetString(PyExc_TypeError, "decode(message: bytes, Tick: tuple subclass, (ltp, quote, full))");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (size < 2) Py_RETURN_NONE;
    Py_ssize_t count = (Py_ssize_t)d[0] << 8 | d[1];
    if (count > (size - 2) / MIN_PACKET) Py_RETURN_NONE; /* bounds the list allocated below */
    PyObject *out = PyList_New(count);
    if (!out) return NULL;
    /* One pass: each length is read once; a malformed message drops the ticks built so far. */
    Py_ssize_t off = 2;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (off + 2 > size) goto malformed;
        Py_ssize_t len = (Py_ssize_t)d[off] << 8 | d[off + 1];
        if (!known_length(len) || off + 2 + len > size) goto malformed;
        PyObject *t = tick((PyTypeObject *)args[1], args[2], d + off + 2, len);
        if (!t) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, i, t);
        off += 2 + len;
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
