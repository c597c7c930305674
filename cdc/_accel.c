/*
 * cdc._accel: the optional compiled accelerator for the reader's hot loops.
 * This file: the module, and InsertDecoder (cdc/pgoutput/_tuples.py's Insert
 * decoding); _accel_convert.c: Converter (cdc/outbox.py's RowConverter);
 * _accel_dedup.c: insert_ids (cdc/_dedup_table.py's fingerprints and probe loop).
 *
 * The pure-Python modules are the reference and the fallback (cdc.accel decides
 * which runs). Everything here does the common, well-formed case only, and
 * hands anything else to the Python function it accelerates, with the same
 * arguments: so every error, its type, message and offset, comes from the
 * reference implementation itself, and the two can differ only in which inputs
 * take the fast path, which tests/pgoutput/test_accel_equivalence.py checks.
 *
 * Every read is bounds-checked against the buffer's length before it happens;
 * nothing here trusts a length read off the wire.
 */
#include "_accel.h"

#include <stdint.h>

/* -- reading big-endian fields ------------------------------------------------------------- */

static inline uint32_t
read_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline uint16_t
read_u16(const unsigned char *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | (unsigned)p[1]);
}

/* -- TupleData ------------------------------------------------------------------------------- */

/*
 * The TupleData at data[pos:end]. Returns 1 and sets *values (a new tuple) and
 * *next (the offset just past it); 0 when the bytes do not decode (nothing
 * set, no exception: the caller asks the reference implementation why);
 * -1 with an exception set when memory runs out.
 */
static int
walk_tuple(const unsigned char *data, Py_ssize_t pos, Py_ssize_t end, PyObject *unchanged,
           PyObject **values, Py_ssize_t *next)
{
    if (end - pos < 2) {
        return 0;
    }
    Py_ssize_t ncols = read_u16(data + pos);
    pos += 2;
    PyObject *out = PyTuple_New(ncols);
    if (out == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (pos >= end) {
            goto malformed;
        }
        unsigned char kind = data[pos];
        PyObject *value;
        if (kind == 't' || kind == 'b') {
            if (end - pos < 5) {
                goto malformed;
            }
            /* Unsigned, as the reference reads it: a negative Int32 is a huge length and fails the check. */
            uint32_t length = read_u32(data + pos + 1);
            Py_ssize_t start = pos + 5;
            if ((uint64_t)length > (uint64_t)(end - start)) {
                goto malformed;
            }
            value = PyBytes_FromStringAndSize((const char *)data + start, (Py_ssize_t)length);
            if (value == NULL) {
                Py_DECREF(out);
                return -1;
            }
            pos = start + (Py_ssize_t)length;
        }
        else if (kind == 'n') {
            value = Py_NewRef(Py_None);
            pos += 1;
        }
        else if (kind == 'u') {
            value = Py_NewRef(unchanged);
            pos += 1;
        }
        else {
            goto malformed;
        }
        PyTuple_SET_ITEM(out, i, value);
    }
    *values = out;
    *next = pos;
    return 1;

malformed:
    Py_DECREF(out);
    return 0;
}

/*
 * The Insert message at data[offset:end], outside a streamed block, when it is
 * well-formed: 1 and a new (relation OID, new tuple) in *result; 0 when it is
 * not; -1 with an exception set.
 */
static int
fast_insert(const unsigned char *data, Py_ssize_t offset, Py_ssize_t end, PyObject *unchanged, PyObject **result)
{
    if (offset < 0 || end - offset < 6 || data[offset] != 'I' || data[offset + 5] != 'N') {
        return 0;
    }
    PyObject *values;
    Py_ssize_t next;
    int found = walk_tuple(data, offset + 6, end, unchanged, &values, &next);
    if (found <= 0) {
        return found;
    }
    if (next != end) {
        Py_DECREF(values);
        return 0;
    }
    PyObject *relation_id = PyLong_FromUnsignedLong(read_u32(data + offset + 1));
    if (relation_id == NULL) {
        Py_DECREF(values);
        return -1;
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(relation_id);
        Py_DECREF(values);
        return -1;
    }
    PyTuple_SET_ITEM(pair, 0, relation_id);
    PyTuple_SET_ITEM(pair, 1, values);
    *result = pair;
    return 1;
}

/* -- InsertDecoder --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *unchanged;     /* the UNCHANGED marker of cdc.pgoutput.messages */
    PyObject *fallback;      /* the reference decode_insert_at(buf, offset) */
    PyObject *fallback_runs; /* the reference insert_runs(frames, offset) */
} InsertDecoder;

static int
InsertDecoder_init(InsertDecoder *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"unchanged", "decode_insert_at", "insert_runs", NULL};
    PyObject *unchanged, *fallback, *fallback_runs;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:InsertDecoder", names, &unchanged, &fallback,
                                     &fallback_runs)) {
        return -1;
    }
    if (!PyCallable_Check(fallback) || !PyCallable_Check(fallback_runs)) {
        PyErr_SetString(PyExc_TypeError, "InsertDecoder: decode_insert_at and insert_runs must be callable");
        return -1;
    }
    Py_XSETREF(self->unchanged, Py_NewRef(unchanged));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->fallback_runs, Py_NewRef(fallback_runs));
    return 0;
}

static int
InsertDecoder_traverse(InsertDecoder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->unchanged);
    Py_VISIT(self->fallback);
    Py_VISIT(self->fallback_runs);
    return 0;
}

static int
InsertDecoder_clear(InsertDecoder *self)
{
    Py_CLEAR(self->unchanged);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->fallback_runs);
    return 0;
}

static void
InsertDecoder_dealloc(InsertDecoder *self)
{
    PyObject_GC_UnTrack(self);
    InsertDecoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
ready(InsertDecoder *self)
{
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "InsertDecoder.__init__ was not called");
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(decode_insert_at_doc,
"decode_insert_at(buf, offset) -> (relation OID, new tuple)\n\n"
"The reference decode_insert_at, compiled for a well-formed Insert in bytes;\n"
"anything else is the reference function's to decode or to reject.");

static PyObject *
InsertDecoder_decode_insert_at(InsertDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!ready(self)) {
        return NULL;
    }
    if (nargs == 2 && PyBytes_CheckExact(args[0]) && PyLong_CheckExact(args[1])) {
        Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
        if (offset == -1 && PyErr_Occurred()) {
            PyErr_Clear();  /* too large for an offset: the reference says what is wrong */
        }
        else {
            PyObject *result;
            int found = fast_insert((const unsigned char *)PyBytes_AS_STRING(args[0]), offset,
                                    PyBytes_GET_SIZE(args[0]), self->unchanged, &result);
            if (found < 0) {
                return NULL;
            }
            if (found) {
                return result;
            }
        }
    }
    return PyObject_Vectorcall(self->fallback, args, (size_t)nargs, NULL);
}

/*
 * One frame of a run: (relation OID, new tuple), fast when the frame's buffer
 * holds a well-formed Insert, else the reference decode_insert_at(bytes(frame), offset).
 */
static PyObject *
insert_of_frame(InsertDecoder *self, PyObject *frame, PyObject *offset_obj, Py_ssize_t offset)
{
    if (PyObject_CheckBuffer(frame)) {
        Py_buffer view;
        if (PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE) == 0) {
            PyObject *result;
            int found = fast_insert((const unsigned char *)view.buf, offset, view.len, self->unchanged, &result);
            PyBuffer_Release(&view);
            if (found < 0) {
                return NULL;
            }
            if (found) {
                return result;
            }
        }
        else {
            PyErr_Clear();  /* not contiguous: the slow way copes */
        }
    }
    PyObject *copy = PyObject_CallOneArg((PyObject *)&PyBytes_Type, frame);
    if (copy == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_CallFunctionObjArgs(self->fallback, copy, offset_obj, NULL);
    Py_DECREF(copy);
    return result;
}

PyDoc_STRVAR(insert_runs_doc,
"insert_runs(frames, offset) -> [(relation OID, [new tuple, ...]), ...]\n\n"
"The Insert message at ``offset`` of each frame, consecutive ones of one relation\n"
"grouped, as the reference insert_runs returns them.");

static PyObject *
InsertDecoder_insert_runs(InsertDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!ready(self)) {
        return NULL;
    }
    Py_ssize_t offset = -1;
    if (nargs == 2 && PyList_CheckExact(args[0]) && PyLong_CheckExact(args[1])) {
        offset = PyLong_AsSsize_t(args[1]);
        if (offset == -1 && PyErr_Occurred()) {
            PyErr_Clear();
        }
    }
    if (offset < 0) {  /* not a list of frames and an offset into them: the reference copes, or says why */
        return PyObject_Vectorcall(self->fallback_runs, args, (size_t)nargs, NULL);
    }
    PyObject *frames = args[0], *offset_obj = args[1];
    PyObject *runs = PyList_New(0);
    if (runs == NULL) {
        return NULL;
    }
    PyObject *run = NULL;          /* borrowed from runs: the open run's list of tuples */
    PyObject *relation_id = NULL;  /* borrowed: the open run's relation OID */
    /* The list is read by index each time: a fallback runs Python code, which could change it. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(frames); i++) {
        PyObject *frame = Py_NewRef(PyList_GET_ITEM(frames, i));
        PyObject *pair = insert_of_frame(self, frame, offset_obj, offset);
        Py_DECREF(frame);
        if (pair == NULL) {
            goto fail;
        }
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
            Py_DECREF(pair);
            PyErr_SetString(PyExc_TypeError, "decode_insert_at must return a (relation OID, tuple) pair");
            goto fail;
        }
        PyObject *rid = PyTuple_GET_ITEM(pair, 0);
        int same = 0;
        if (relation_id != NULL) {
            same = PyObject_RichCompareBool(rid, relation_id, Py_EQ);
            if (same < 0) {
                Py_DECREF(pair);
                goto fail;
            }
        }
        if (!same) {
            PyObject *fresh = PyList_New(0);
            PyObject *entry = fresh == NULL ? NULL : PyTuple_Pack(2, rid, fresh);
            Py_XDECREF(fresh);
            if (entry == NULL || PyList_Append(runs, entry) < 0) {
                Py_XDECREF(entry);
                Py_DECREF(pair);
                goto fail;
            }
            Py_DECREF(entry);  /* runs holds it, and through it the run and the OID */
            run = fresh;
            relation_id = rid;
        }
        int appended = PyList_Append(run, PyTuple_GET_ITEM(pair, 1));
        Py_DECREF(pair);
        if (appended < 0) {
            goto fail;
        }
    }
    return runs;

fail:
    Py_DECREF(runs);
    return NULL;
}

static PyMethodDef InsertDecoder_methods[] = {
    {"decode_insert_at", (PyCFunction)(void (*)(void))InsertDecoder_decode_insert_at, METH_FASTCALL,
     decode_insert_at_doc},
    {"insert_runs", (PyCFunction)(void (*)(void))InsertDecoder_insert_runs, METH_FASTCALL, insert_runs_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(InsertDecoder_doc,
"InsertDecoder(unchanged, decode_insert_at, insert_runs)\n\n"
"Compiled Insert decoding. ``unchanged`` is the marker for an unchanged TOAST\n"
"value; the two functions are the reference implementations, which decode (or\n"
"reject, with their own errors) anything this does not take on the fast path.");

static PyTypeObject InsertDecoder_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc._accel.InsertDecoder",
    .tp_basicsize = sizeof(InsertDecoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = InsertDecoder_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)InsertDecoder_init,
    .tp_traverse = (traverseproc)InsertDecoder_traverse,
    .tp_clear = (inquiry)InsertDecoder_clear,
    .tp_dealloc = (destructor)InsertDecoder_dealloc,
    .tp_methods = InsertDecoder_methods,
};

/* -- the module ------------------------------------------------------------------------------ */

int
cdc_accel_add_decoder(PyObject *module)
{
    if (PyType_Ready(&InsertDecoder_Type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "InsertDecoder", (PyObject *)&InsertDecoder_Type);
}

static int
accel_exec(PyObject *module)
{
    if (cdc_accel_add_decoder(module) < 0 || cdc_accel_add_converter(module) < 0 || cdc_accel_add_dedup(module) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot accel_slots[] = {
    {Py_mod_exec, accel_exec},
    {0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdc._accel",
    .m_doc = "Compiled hot loops for cdc; cdc.accel decides whether they are used.",
    .m_size = 0,
    .m_slots = accel_slots,
};

PyMODINIT_FUNC
PyInit__accel(void)
{
    return PyModuleDef_Init(&accel_module);
}
