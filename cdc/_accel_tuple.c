/*
 * cdc._accel.WireTuple: an Insert's new tuple left in the frame it came in.
 *
 * The run and group decoders hand on thousands of rows a second. As a tuple of
 * one bytes object per column a row costs nine allocations, which live traffic
 * takes from memory gone cold since the last flush, and nine frees later. A
 * WireTuple is one small object: the frame's bytes (referenced, or copied once
 * when the frame is not bytes) and where each value lies in them.
 *
 * As a sequence it is the tuple the reference decoder makes: the same length,
 * items made on demand (bytes, None for NULL, the UNCHANGED marker), equal to
 * that tuple, hashing and printing alike. The compiled Converter
 * (_accel_convert.c) reads the values where they lie, through cdc_wire_value.
 */
#include "_accel.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SPAN_NULL CDC_VALUE_NULL
#define SPAN_UNCHANGED CDC_VALUE_UNCHANGED

typedef struct {
    uint32_t start;  /* offset of the value in the owner's bytes */
    int32_t length;  /* or SPAN_NULL, SPAN_UNCHANGED */
} Span;

typedef struct {
    PyObject_VAR_HEAD
    PyObject *owner;      /* bytes */
    PyObject *unchanged;  /* the UNCHANGED marker of cdc.pgoutput.messages */
    Span spans[1];
} WireTuple;

static PyTypeObject WireTuple_Type;

int
cdc_wire_tuple(PyObject *frame, const unsigned char *data, Py_ssize_t pos, Py_ssize_t end, PyObject *unchanged,
               PyObject **values, Py_ssize_t *next)
{
    /* Offsets are kept in 32 bits: a CopyData message is shorter than 2 GB, anything else is the reference's. */
    if (end - pos < 2 || end > INT32_MAX) {
        return 0;
    }
    Py_ssize_t ncols = cdc_read_u16(data + pos);
    Py_ssize_t first = pos;
    pos += 2;
    WireTuple *out = PyObject_NewVar(WireTuple, &WireTuple_Type, ncols);
    if (out == NULL) {
        return -1;
    }
    out->owner = NULL;
    out->unchanged = NULL;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Py_ssize_t start = 0, length = cdc_tuple_value(data, &pos, end, &start);
        if (length == CDC_VALUE_MALFORMED) {
            goto malformed;
        }
        out->spans[i].start = (uint32_t)start;
        out->spans[i].length = (int32_t)length;  /* below 2**31 (end is), or SPAN_NULL, SPAN_UNCHANGED */
    }
    if (PyBytes_CheckExact(frame) && (const unsigned char *)PyBytes_AS_STRING(frame) == data) {
        out->owner = Py_NewRef(frame);
    }
    else {
        /* A memoryview's memory may be reused after this call: keep a copy of the tuple's bytes alone. */
        out->owner = PyBytes_FromStringAndSize((const char *)data + first, pos - first);
        if (out->owner == NULL) {
            Py_DECREF(out);
            return -1;
        }
        for (Py_ssize_t i = 0; i < ncols; i++) {
            if (out->spans[i].length >= 0) {
                out->spans[i].start -= (uint32_t)first;
            }
        }
    }
    out->unchanged = Py_NewRef(unchanged);
    *values = (PyObject *)out;
    *next = pos;
    return 1;

malformed:
    Py_DECREF(out);
    return 0;
}

int
cdc_wire_value(PyObject *values, Py_ssize_t i, const char **data, Py_ssize_t *size)
{
    WireTuple *self = (WireTuple *)values;
    Span span = self->spans[i];
    if (span.length < 0) {
        return 0;
    }
    *data = PyBytes_AS_STRING(self->owner) + span.start;
    *size = span.length;
    return 1;
}

int
cdc_wire_check(PyObject *values)
{
    return Py_IS_TYPE(values, &WireTuple_Type);
}

/* -- the sequence ----------------------------------------------------------------------------- */

static PyObject *
item(WireTuple *self, Py_ssize_t i)
{
    if (i < 0 || i >= Py_SIZE(self)) {
        PyErr_SetString(PyExc_IndexError, "tuple index out of range");
        return NULL;
    }
    Span span = self->spans[i];
    if (span.length == SPAN_NULL) {
        Py_RETURN_NONE;
    }
    if (span.length == SPAN_UNCHANGED) {
        return Py_NewRef(self->unchanged);
    }
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->owner) + span.start, span.length);
}

/* The tuple the reference decoder makes of the same bytes. */
static PyObject *
as_tuple(WireTuple *self)
{
    PyObject *out = PyTuple_New(Py_SIZE(self));
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        PyObject *value = item(self, i);
        if (value == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, value);
    }
    return out;
}

static Py_ssize_t
length(WireTuple *self)
{
    return Py_SIZE(self);
}

static PyObject *
subscript(WireTuple *self, PyObject *key)
{
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) {
            return NULL;
        }
        return item(self, i < 0 ? i + Py_SIZE(self) : i);
    }
    PyObject *whole = as_tuple(self);
    if (whole == NULL) {
        return NULL;
    }
    PyObject *out = PyObject_GetItem(whole, key);  /* a slice, or tuple's own TypeError */
    Py_DECREF(whole);
    return out;
}

static PyObject *
richcompare(WireTuple *self, PyObject *other, int op)
{
    if (!PyTuple_Check(other) && !Py_IS_TYPE(other, &WireTuple_Type)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *mine = as_tuple(self);
    PyObject *theirs = mine == NULL ? NULL
        : Py_IS_TYPE(other, &WireTuple_Type) ? as_tuple((WireTuple *)other) : Py_NewRef(other);
    PyObject *out = theirs == NULL ? NULL : PyObject_RichCompare(mine, theirs, op);
    Py_XDECREF(mine);
    Py_XDECREF(theirs);
    return out;
}

static Py_hash_t
hash(WireTuple *self)
{
    PyObject *whole = as_tuple(self);
    if (whole == NULL) {
        return -1;
    }
    Py_hash_t out = PyObject_Hash(whole);
    Py_DECREF(whole);
    return out;
}

static PyObject *
repr(WireTuple *self)
{
    PyObject *whole = as_tuple(self);
    if (whole == NULL) {
        return NULL;
    }
    PyObject *out = PyObject_Repr(whole);
    Py_DECREF(whole);
    return out;
}

static PyObject *
reduce(WireTuple *self, PyObject *Py_UNUSED(ignored))
{
    /* Pickled (or copied) as the tuple it stands for. */
    PyObject *whole = as_tuple(self);
    return whole == NULL ? NULL : Py_BuildValue("(O(N))", (PyObject *)&PyTuple_Type, whole);
}

static void
dealloc(WireTuple *self)
{
    Py_XDECREF(self->owner);
    Py_XDECREF(self->unchanged);
    PyObject_Free(self);
}

static PySequenceMethods as_sequence = {
    .sq_length = (lenfunc)length,
    .sq_item = (ssizeargfunc)item,
};

static PyMappingMethods as_mapping = {
    .mp_length = (lenfunc)length,
    .mp_subscript = (binaryfunc)subscript,
};

static PyMethodDef methods[] = {
    {"__reduce__", (PyCFunction)reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(WireTuple_doc,
"An Insert's new tuple as it came off the wire: a sequence equal to the tuple of\n"
"bytes, None and UNCHANGED the reference decoder makes, each item made when asked for.\n"
"Made by the compiled run and group decoders only.");

/* Not a GC container: it refers to bytes and to the UNCHANGED marker, neither of which can refer back. */
static PyTypeObject WireTuple_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc._accel.WireTuple",
    .tp_basicsize = offsetof(WireTuple, spans),
    .tp_itemsize = sizeof(Span),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = WireTuple_doc,
    .tp_dealloc = (destructor)dealloc,
    .tp_repr = (reprfunc)repr,
    .tp_hash = (hashfunc)hash,
    .tp_richcompare = (richcmpfunc)richcompare,
    .tp_as_sequence = &as_sequence,
    .tp_as_mapping = &as_mapping,
    .tp_methods = methods,
};

int
cdc_accel_add_wire_tuple(PyObject *module)
{
    return PyModule_AddType(module, &WireTuple_Type);  /* readied, and added by its name */
}
