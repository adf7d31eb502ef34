/*
 * Optional native decoder of binary Kite messages into connector.kite.Tick records, identical to the
 * Python decoder in _binary.py (the tests compare both on random messages). It handles well-formed
 * messages only and returns None otherwise, so errors are always reported by the Python decoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { N_FIELDS = 21 };

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static PyObject *u32(const unsigned char *p) { return PyLong_FromUnsignedLong(be32(p)); }
static PyObject *price(const unsigned char *p, double div) { return PyFloat_FromDouble(be32(p) / div); }
static PyObject *ms(const unsigned char *p) { return PyLong_FromLongLong((long long)be32(p) * 1000); }

static PyObject *none(void) { Py_INCREF(Py_None); return Py_None; }

/* Fields in the order of connector.kite.Tick; NULL entries are None. */
static PyObject *tick(PyObject *cls, PyObject *modes, const unsigned char *p, Py_ssize_t len) {
    PyObject *f[N_FIELDS] = {0};
    uint32_t token = be32(p);
    long seg = (long)(token & 0xFF);
    double div = seg == 3 ? 1e7 : (seg == 6 || seg == 12) ? 1e4 : 100.0;
    int mode = len == 8 ? 0 : (len == 28 || len == 44) ? 1 : 2;
    double last = be32(p + 4) / div;
    f[0] = PyLong_FromUnsignedLong(token);
    f[1] = PyTuple_GET_ITEM(modes, mode);
    Py_INCREF(f[1]);
    f[2] = PyBool_FromLong(seg != 9);
    f[3] = PyFloat_FromDouble(last);
    if (len == 28 || len == 32) {
        double close = be32(p + 20) / div;
        f[9] = price(p + 16, div); f[10] = price(p + 8, div); f[11] = price(p + 12, div);
        f[12] = PyFloat_FromDouble(close);
        f[13] = PyFloat_FromDouble(last - close);
        f[14] = close != 0 ? PyFloat_FromDouble((last - close) * 100 / close) : PyLong_FromLong(0);
        if (len == 32) f[19] = ms(p + 28);
    } else if (len != 8) {
        double close = be32(p + 40) / div;
        f[4] = u32(p + 8); f[5] = price(p + 12, div); f[6] = u32(p + 16); f[7] = u32(p + 20); f[8] = u32(p + 24);
        f[9] = price(p + 28, div); f[10] = price(p + 32, div); f[11] = price(p + 36, div);
        f[12] = PyFloat_FromDouble(close);
        f[13] = PyFloat_FromDouble(last - close);
        f[14] = close != 0 ? PyFloat_FromDouble((last - close) * 100 / close) : PyLong_FromLong(0);
        if (len == 184) {
            f[15] = ms(p + 44); f[16] = u32(p + 48); f[17] = u32(p + 52); f[18] = u32(p + 56); f[19] = ms(p + 60);
            f[20] = PyTuple_New(30);
            if (f[20]) {
                for (int i = 0; i < 10; i++) {
                    const unsigned char *l = p + 64 + 12 * i;
                    PyTuple_SET_ITEM(f[20], 3 * i, u32(l));
                    PyTuple_SET_ITEM(f[20], 3 * i + 1, u32(l + 4));
                    PyTuple_SET_ITEM(f[20], 3 * i + 2, PyLong_FromLong(((long)l[8] << 8) | l[9]));
                }
            }
        }
    }
    PyObject *items = PyTuple_New(N_FIELDS);
    if (!items) goto fail;
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *v = f[i] ? f[i] : none();
        PyTuple_SET_ITEM(items, i, v);
        f[i] = NULL;
    }
    /* tuple.__new__(Tick, items): a Tick instance without running its argument parsing. */
    PyObject *args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (!args) return NULL;
    PyObject *out = PyTuple_Type.tp_new((PyTypeObject *)cls, args, NULL);
    Py_DECREF(args);
    return out;
fail:
    for (int i = 0; i < N_FIELDS; i++) Py_XDECREF(f[i]);
    return NULL;
}

/* decode(message, Tick, (ltp, quote, full)) -> [Tick] or None when anything is malformed. */
static PyObject *decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[1]) || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != 3) {
        PyErr_SetString(PyExc_TypeError, "decode(message, Tick, (ltp, quote, full))");
        return NULL;
    }
    Py_buffer msg;
    if (PyObject_GetBuffer(args[0], &msg, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *d = msg.buf;
    Py_ssize_t size = msg.len, count = size >= 2 ? ((Py_ssize_t)d[0] << 8 | d[1]) : -1, o = 2;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (o + 2 > size) { count = -1; break; }
        Py_ssize_t len = (Py_ssize_t)d[o] << 8 | d[o + 1];
        o += 2 + len;
        if (o > size || !(len == 8 || len == 28 || len == 32 || len == 44 || len == 184)) { count = -1; break; }
    }
    if (count < 0 || o != size) { PyBuffer_Release(&msg); Py_RETURN_NONE; }
    PyObject *out = PyList_New(count);
    for (Py_ssize_t i = 0, off = 2; out && i < count; i++) {
        Py_ssize_t len = (Py_ssize_t)d[off] << 8 | d[off + 1];
        PyObject *t = tick(args[1], args[2], d + off + 2, len);
        if (!t) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, i, t);
        off += 2 + len;
    }
    PyBuffer_Release(&msg);
    return out;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "Ticks of a well-formed binary Kite message, or None (the Python decoder reports the faults)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
