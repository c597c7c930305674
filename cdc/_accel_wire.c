/*
 * cdc._accel.copy_frames: cdc.pg.wire.copy_frames_reference in C, the same results and errors.
 *
 * The replication stream's reader (cdc/pg/copy_stream.py) fills one buffer per
 * read; this takes the CopyData payloads of its whole messages as bytes in one
 * call, where libpq made an allocation and psycopg three objects per message.
 */
#include "_accel.h"

PyDoc_STRVAR(copy_frames_doc,
"copy_frames(buf, start, end, max_messages, max_bytes) -> (payloads, position, size)\n\n"
"cdc.pg.wire.copy_frames_reference, compiled: the CopyData payloads of the whole\n"
"messages in buf[start:end] (bytes or bytearray), up to max_messages, or up to\n"
"the one that brings their size to max_bytes.");

static int
as_ssize(PyObject *obj, Py_ssize_t *out)
{
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL) {
        return -1;
    }
    /* Clamped, not an OverflowError: a huge bound is no bound, a huge position fails the range check. */
    *out = PyNumber_AsSsize_t(index, NULL);
    Py_DECREF(index);
    return 0;
}

static PyObject *
copy_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "copy_frames() takes 5 positional arguments but %zd were given", nargs);
        return NULL;
    }
    PyObject *buf = args[0];
    const unsigned char *data;
    Py_ssize_t len;
    if (PyBytes_CheckExact(buf)) {
        data = (const unsigned char *)PyBytes_AS_STRING(buf);
        len = PyBytes_GET_SIZE(buf);
    }
    else if (PyByteArray_CheckExact(buf)) {
        data = (const unsigned char *)PyByteArray_AS_STRING(buf);
        len = PyByteArray_GET_SIZE(buf);
    }
    else {
        PyErr_Format(PyExc_TypeError, "copy_frames: buf must be bytes or bytearray, not %.200s",
                     Py_TYPE(buf)->tp_name);
        return NULL;
    }
    Py_ssize_t start, end, max_messages, max_bytes;
    if (as_ssize(args[1], &start) < 0 || as_ssize(args[2], &end) < 0 || as_ssize(args[3], &max_messages) < 0 ||
        as_ssize(args[4], &max_bytes) < 0) {
        return NULL;
    }
    if (start < 0 || start > end || end > len) {
        PyErr_SetString(PyExc_ValueError, "copy_frames: needs 0 <= start <= end <= len(buf)");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t pos = start, size = 0, count = 0;
    while (count < max_messages && size < max_bytes && end - pos >= 5) {
        const unsigned char *p = data + pos;
        Py_ssize_t length = (Py_ssize_t)cdc_read_u32(p + 1);
        if (p[0] != 'd' || length < 4 || length > end - pos - 1) {
            break;
        }
        PyObject *payload = PyBytes_FromStringAndSize((const char *)p + 5, length - 4);
        if (payload == NULL || PyList_Append(out, payload) < 0) {
            Py_XDECREF(payload);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(payload);
        count++;
        size += length - 4;
        pos += 1 + length;
    }
    return Py_BuildValue("(Nnn)", out, pos, size);
}

static PyMethodDef wire_methods[] = {
    {"copy_frames", (PyCFunction)(void (*)(void))copy_frames, METH_FASTCALL, copy_frames_doc},
    {NULL, NULL, 0, NULL},
};

int
cdc_accel_add_wire(PyObject *module)
{
    return PyModule_AddFunctions(module, wire_methods);
}
