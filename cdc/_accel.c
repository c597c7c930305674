/*
 * cdc._accel: the optional compiled accelerator for the reader's hot loops.
 * This file: the module, and InsertDecoder (cdc/pgoutput/_tuples.py's Insert
 * decoding); _accel_groups.c: its transactions_at (cdc/pgoutput/_groups.py);
 * _accel_convert.c: Converter (cdc/outbox.py's RowConverter);
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
#include <string.h>

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
    Py_ssize_t ncols = cdc_read_u16(data + pos);
    pos += 2;
    PyObject *out = PyTuple_New(ncols);
    if (out == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Py_ssize_t start, length = cdc_tuple_value(data, &pos, end, &start);
        PyObject *value;
        if (length >= 0) {
            value = PyBytes_FromStringAndSize((const char *)data + start, length);
            if (value == NULL) {
                Py_DECREF(out);
                return -1;
            }
        }
        else if (length == CDC_VALUE_NULL) {
            value = Py_NewRef(Py_None);
        }
        else if (length == CDC_VALUE_UNCHANGED) {
            value = Py_NewRef(unchanged);
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
 * well-formed: 1, its new tuple in *values and its relation OID in
 * *relation_id; 0 when it is not; -1 with an exception set. With the frame
 * that holds ``data`` the tuple is a WireTuple (_accel_tuple.c), else a tuple.
 */
int
cdc_insert_values(PyObject *frame, const unsigned char *data, Py_ssize_t offset, Py_ssize_t end,
                  PyObject *unchanged, PyObject **values, uint32_t *relation_id)
{
    if (offset < 0 || end - offset < 6 || data[offset] != 'I' || data[offset + 5] != 'N') {
        return 0;
    }
    Py_ssize_t next;
    int found = frame != NULL ? cdc_wire_tuple(frame, data, offset + 6, end, unchanged, values, &next)
                              : walk_tuple(data, offset + 6, end, unchanged, values, &next);
    if (found <= 0) {
        return found;
    }
    if (next != end) {
        Py_DECREF(*values);
        return 0;
    }
    *relation_id = cdc_read_u32(data + offset + 1);
    return 1;
}

/* The same, as a new (relation OID, new tuple) in *result. */
int
cdc_fast_insert(PyObject *frame, const unsigned char *data, Py_ssize_t offset, Py_ssize_t end, PyObject *unchanged,
                PyObject **result)
{
    PyObject *values;
    uint32_t rid;
    int found = cdc_insert_values(frame, data, offset, end, unchanged, &values, &rid);
    if (found <= 0) {
        return found;
    }
    PyObject *relation_id = PyLong_FromUnsignedLong(rid);
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


static int
InsertDecoder_init(InsertDecoder *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"unchanged", "decode_insert_at", "insert_run_at", "transactions_at", NULL};
    PyObject *unchanged, *fallback, *fallback_runs, *fallback_groups;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:InsertDecoder", names, &unchanged, &fallback,
                                     &fallback_runs, &fallback_groups)) {
        return -1;
    }
    if (!PyCallable_Check(fallback) || !PyCallable_Check(fallback_runs) || !PyCallable_Check(fallback_groups)) {
        PyErr_SetString(PyExc_TypeError,
                        "InsertDecoder: decode_insert_at, insert_run_at and transactions_at must be callable");
        return -1;
    }
    Py_XSETREF(self->unchanged, Py_NewRef(unchanged));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->fallback_runs, Py_NewRef(fallback_runs));
    Py_XSETREF(self->fallback_groups, Py_NewRef(fallback_groups));
    return 0;
}

static int
InsertDecoder_traverse(InsertDecoder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->unchanged);
    Py_VISIT(self->fallback);
    Py_VISIT(self->fallback_runs);
    Py_VISIT(self->fallback_groups);
    return 0;
}

static int
InsertDecoder_clear(InsertDecoder *self)
{
    Py_CLEAR(self->unchanged);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->fallback_runs);
    Py_CLEAR(self->fallback_groups);
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
            int found = cdc_fast_insert(NULL, (const unsigned char *)PyBytes_AS_STRING(args[0]), offset,
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
 * A frame's bytes, when it is bytes or a plain memoryview of bytes (one
 * dimension, one-byte items, contiguous): 1, with *view to release when held;
 * 0 when it is anything else (the reference decides what that means).
 */
int
cdc_frame_bytes(PyObject *frame, Py_buffer *view, int *held, const unsigned char **data, Py_ssize_t *size)
{
    *held = 0;
    if (PyBytes_CheckExact(frame)) {
        *data = (const unsigned char *)PyBytes_AS_STRING(frame);
        *size = PyBytes_GET_SIZE(frame);
        return 1;
    }
    if (!PyMemoryView_Check(frame)) {
        return 0;
    }
    if (PyObject_GetBuffer(frame, view, PyBUF_FULL_RO) < 0) {
        PyErr_Clear();  /* released, say: the reference raises what it raises */
        return 0;
    }
    if (view->ndim != 1 || view->itemsize != 1 || (view->format != NULL && strcmp(view->format, "B") != 0) ||
        (view->strides != NULL && view->strides[0] != 1) || view->suboffsets != NULL) {
        PyBuffer_Release(view);
        return 0;
    }
    *held = 1;
    *data = view->buf;
    *size = view->len;
    return 1;
}

PyDoc_STRVAR(insert_run_at_doc,
"insert_run_at(frames, start, offset) -> (relation OID, [new tuple, ...], next index)\n\n"
"The reference insert_run_at, compiled for frames that are bytes or plain memoryviews\n"
"holding well-formed Inserts; anything else is the reference's to decode or to reject.");

static PyObject *
InsertDecoder_insert_run_at(InsertDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!ready(self)) {
        return NULL;
    }
    Py_ssize_t start = -1, offset = -1, n = 0;
    if (nargs == 3 && PyList_CheckExact(args[0]) && PyLong_CheckExact(args[1]) && PyLong_CheckExact(args[2])) {
        n = PyList_GET_SIZE(args[0]);
        start = PyLong_AsSsize_t(args[1]);
        offset = PyLong_AsSsize_t(args[2]);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            start = -1;
        }
    }
    if (start < 0 || start >= n || offset < 0) {
        goto reference;
    }
    /* No Python code runs below until the result is built: the list cannot change under us. */
    PyObject *frames = args[0];
    Py_buffer view;
    int held;
    const unsigned char *data;
    Py_ssize_t size;
    PyObject *first;
    PyObject *frame = PyList_GET_ITEM(frames, start);
    if (!cdc_frame_bytes(frame, &view, &held, &data, &size)) {
        goto reference;
    }
    int found = cdc_fast_insert(frame, data, offset, size, self->unchanged, &first);
    if (held) {
        PyBuffer_Release(&view);
    }
    if (found <= 0) {
        if (found < 0) {
            return NULL;
        }
        goto reference;
    }
    PyObject *relation_id = Py_NewRef(PyTuple_GET_ITEM(first, 0));
    PyObject *run = PyList_New(1);
    if (run == NULL) {
        Py_DECREF(first);
        Py_DECREF(relation_id);
        return NULL;
    }
    PyList_SET_ITEM(run, 0, Py_NewRef(PyTuple_GET_ITEM(first, 1)));
    Py_DECREF(first);
    uint32_t rid = (uint32_t)PyLong_AsUnsignedLong(relation_id);  /* it came from a uint32 */
    Py_ssize_t i = start + 1;
    for (; i < n; i++) {
        frame = PyList_GET_ITEM(frames, i);
        if (!cdc_frame_bytes(frame, &view, &held, &data, &size) || size == 0) {
            if (held) {
                PyBuffer_Release(&view);
            }
            goto drop;
        }
        if (data[0] != 'w' || size <= offset || data[offset] != 'I') {
            if (held) {
                PyBuffer_Release(&view);
            }
            break;
        }
        PyObject *values;
        uint32_t next_id;
        found = cdc_insert_values(frame, data, offset, size, self->unchanged, &values, &next_id);
        if (held) {
            PyBuffer_Release(&view);
        }
        if (found <= 0) {
            if (found < 0) {
                Py_DECREF(run);
                Py_DECREF(relation_id);
                return NULL;
            }
            goto drop;
        }
        if (next_id != rid) {
            Py_DECREF(values);
            break;
        }
        int appended = PyList_Append(run, values);
        Py_DECREF(values);
        if (appended < 0) {
            Py_DECREF(run);
            Py_DECREF(relation_id);
            return NULL;
        }
    }
    PyObject *next = PyLong_FromSsize_t(i);
    if (next == NULL) {
        Py_DECREF(run);
        Py_DECREF(relation_id);
        return NULL;
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(run);
        Py_DECREF(relation_id);
        Py_DECREF(next);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, relation_id);
    PyTuple_SET_ITEM(result, 1, run);
    PyTuple_SET_ITEM(result, 2, next);
    return result;

drop:  /* a frame the fast path does not take: the reference does the whole run, and says why if it fails */
    Py_DECREF(run);
    Py_DECREF(relation_id);
reference:
    return PyObject_Vectorcall(self->fallback_runs, args, (size_t)nargs, NULL);
}

static PyMethodDef InsertDecoder_methods[] = {
    {"decode_insert_at", (PyCFunction)(void (*)(void))InsertDecoder_decode_insert_at, METH_FASTCALL,
     decode_insert_at_doc},
    {"insert_run_at", (PyCFunction)(void (*)(void))InsertDecoder_insert_run_at, METH_FASTCALL, insert_run_at_doc},
    {"transactions_at", (PyCFunction)(void (*)(void))cdc_transactions_at, METH_FASTCALL, cdc_transactions_at_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(InsertDecoder_doc,
"InsertDecoder(unchanged, decode_insert_at, insert_run_at, transactions_at)\n\n"
"Compiled Insert decoding. ``unchanged`` is the marker for an unchanged TOAST\n"
"value; the three functions are the reference implementations, which decode (or\n"
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
    return PyModule_AddType(module, &InsertDecoder_Type);  /* readied, and added by its name */
}

static int
accel_exec(PyObject *module)
{
    if (cdc_accel_add_decoder(module) < 0 || cdc_accel_add_converter(module) < 0 || cdc_accel_add_dedup(module) < 0 ||
        cdc_accel_add_wire(module) < 0 || cdc_accel_add_wire_tuple(module) < 0) {
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
