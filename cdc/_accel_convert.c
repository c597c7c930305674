/*
 * cdc._accel.Converter: RowConverter.convert_many (cdc/core/outbox.py) for the rows that are plainly fine.
 *
 * A row takes the fast path only when every value is exactly what the pure-Python
 * fast path accepts with no doubt: bytes where bytes are expected, event type and
 * environment already in the converter's shared-string table, occurred_at in
 * PostgreSQL's own output shape (YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM], a valid
 * date), integers as plain decimal digits. Any other row is handed, alone, to the
 * pure-Python convert_many, which converts it or says why not: every rejection
 * and every reason comes from the reference.
 *
 * With ``binary`` it is BinaryRowConverter.convert_many (cdc/core/outbox_binary.py)
 * instead, for the outbox it takes in one go (occurred_at timestamptz, payload
 * jsonb, a text unique_id): occurred_at an 8-byte int64 of microseconds since
 * 2000-01-01, payload jsonb's version byte 1 then the JSON text, id and
 * metadata_version big-endian integers of 2, 4 or 8 bytes.
 *
 * A row is a tuple of bytes, or a WireTuple (_accel_tuple.c) as the compiled
 * decoders hand rows on, whose values are read where they lie in the frame: only
 * the unique_id and the payload become bytes objects. Values are read in
 * _accel_values.c; convert_transactions is in _accel_transactions.c.
 */
#include "_accel_convert.h"

#include <stdint.h>
#include <string.h>

/* The bytes object of a cell: its own, or a new one. */
static PyObject *
bytes_of(const Cell *value)
{
    return value->object != NULL ? Py_NewRef(value->object) : PyBytes_FromStringAndSize(value->data, value->size);
}

/* The event row (unique_id, event_type, occurred_at, environment, payload, version, id, seq) in *row: 1, or -1
   with an exception set. ``uid``, ``type``, ``env`` and ``payload`` are new references (``uid`` and ``payload``
   NULL when out of memory), which this takes over either way. */
static int
make_row(PyObject *uid, PyObject *type, long long micros, PyObject *env, PyObject *payload, long long version,
         long long id, long long seq, PyObject **row)
{
    PyObject *out = uid == NULL || payload == NULL ? NULL : PyTuple_New(8);
    if (out == NULL) {
        Py_XDECREF(uid);
        Py_DECREF(type);
        Py_DECREF(env);
        Py_XDECREF(payload);
        return -1;
    }
    PyTuple_SET_ITEM(out, 0, uid);
    PyTuple_SET_ITEM(out, 1, type);
    PyTuple_SET_ITEM(out, 3, env);
    PyTuple_SET_ITEM(out, 4, payload);
    PyObject *numbers[] = {PyLong_FromLongLong(micros), PyLong_FromLongLong(version), PyLong_FromLongLong(id),
                           PyLong_FromLongLong(seq)};
    const int slots[] = {2, 5, 6, 7};
    int failed = 0;
    for (int i = 0; i < 4; i++) {
        if (numbers[i] == NULL) {
            failed = 1;
        }
        else {
            PyTuple_SET_ITEM(out, slots[i], numbers[i]);
        }
    }
    if (failed) {
        Py_DECREF(out);  /* a NULL item is fine for a tuple being freed */
        return -1;
    }
    *row = out;
    return 1;
}

/* The row's event type and environment as shared strings, new references: 1; 0 when either is not in the
   table (or an error is set). Looked up last, once every other check has passed: nothing to release after. */
static int
shared_pair(Converter *self, const Cell *c, PyObject **type, PyObject **env)
{
    *type = cdc_shared(self, &c[I_TYPE]);
    *env = *type == NULL ? NULL : cdc_shared(self, &c[I_ENV]);
    if (*env == NULL) {
        Py_XDECREF(*type);
        return 0;
    }
    return 1;
}

/* fast_row for binary values; the same contract. */
static int
fast_binary_row(Converter *self, const Cell *c, long long seq, PyObject **row)
{
    const Cell *uid = &c[I_UID], *payload = &c[I_PAYLOAD];
    if (uid->size == 0) {
        return 0;
    }
    /* jsonb: its format version (1), then the JSON text, which is what is stored. */
    if (payload->size < 1 || payload->data[0] != 1 || payload->size - 1 > self->max_payload) {
        return 0;
    }
    long long raw, version, id;
    if (c[I_AT].size != 8 || !cdc_parse_be_int(&c[I_AT], &raw)) {
        return 0;
    }
    /* The bounds lie well inside int64 either way: compared before adding, nothing overflows. */
    if (raw < self->low - PG_EPOCH_UNIX_MICROS || raw > self->high - PG_EPOCH_UNIX_MICROS) {
        return 0;
    }
    if (!cdc_parse_be_int(&c[I_VERSION], &version) || version < INT32_MIN || version > INT32_MAX ||
        !cdc_parse_be_int(&c[I_ID], &id)) {
        return 0;
    }
    PyObject *type, *env;
    if (!shared_pair(self, c, &type, &env)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *json = PyBytes_FromStringAndSize(payload->data + 1, payload->size - 1);
    return make_row(bytes_of(uid), type, raw + PG_EPOCH_UNIX_MICROS, env, json, version, id, seq, row);
}

/* fast_row for text values; the same contract. */
static int
fast_text_row(Converter *self, const Cell *c, long long seq, PyObject **row)
{
    const Cell *uid = &c[I_UID], *payload = &c[I_PAYLOAD], *at = &c[I_AT];
    if (uid->size == 0 || payload->size > self->max_payload) {
        return 0;
    }
    long long version, id, micros;
    if (!cdc_parse_int(&c[I_VERSION], &version) || version < INT32_MIN || version > INT32_MAX ||
        !cdc_parse_int(&c[I_ID], &id)) {
        return 0;
    }
    if (self->last_at_size != 0 && self->last_at_size == at->size &&
        memcmp(self->last_at, at->data, (size_t)at->size) == 0) {
        micros = self->last_micros;  /* rows of one transaction usually share it */
    }
    else {
        if (!cdc_parse_timestamptz((const unsigned char *)at->data, at->size, &micros)) {
            return 0;
        }
        memcpy(self->last_at, at->data, (size_t)at->size);  /* at most MAX_AT bytes, or it would not parse */
        self->last_at_size = at->size;
        self->last_micros = micros;
    }
    if (micros < self->low || micros > self->high) {
        return 0;
    }
    PyObject *type, *env;
    if (!shared_pair(self, c, &type, &env)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    return make_row(bytes_of(uid), type, micros, env, bytes_of(payload), version, id, seq, row);
}

/*
 * The required values of a row: 1 when each is bytes (a tuple's bytes objects, or a WireTuple's values);
 * 0 when the row is not of the relation's width or a required value is NULL, unchanged or not bytes.
 */
static int
cells_of(Converter *self, PyObject *values, Cell *c)
{
    if (PyTuple_CheckExact(values)) {
        if (PyTuple_GET_SIZE(values) != self->width) {
            return 0;
        }
        for (int k = 0; k < N_INDEX; k++) {
            PyObject *value = PyTuple_GET_ITEM(values, self->index[k]);
            if (!PyBytes_CheckExact(value)) {
                return 0;
            }
            c[k].data = PyBytes_AS_STRING(value);
            c[k].size = PyBytes_GET_SIZE(value);
            c[k].object = value;
        }
        return 1;
    }
    if (!cdc_wire_check(values) || Py_SIZE(values) != self->width) {
        return 0;
    }
    for (int k = 0; k < N_INDEX; k++) {
        if (!cdc_wire_value(values, self->index[k], &c[k].data, &c[k].size)) {
            return 0;
        }
        c[k].object = NULL;
    }
    return 1;
}

/* 1 and a new row in *row; 0 when the reference must look at it; -1 with an exception set. */
int
cdc_fast_row(Converter *self, PyObject *values, long long seq, PyObject **row)
{
    Cell cells[N_INDEX];
    if (!cells_of(self, values, cells)) {
        return 0;
    }
    return self->binary ? fast_binary_row(self, cells, seq, row) : fast_text_row(self, cells, seq, row);
}

/* The reference's verdict on one row: its rows and rejections appended to ours. */
int
cdc_slow_row(Converter *self, PyObject *values, long long seq, PyObject *rows, PyObject *rejected)
{
    PyObject *one = PyList_New(1);
    if (one == NULL) {
        return -1;
    }
    PyList_SET_ITEM(one, 0, Py_NewRef(values));
    PyObject *first = PyLong_FromLongLong(seq);
    PyObject *result = first == NULL ? NULL : PyObject_CallFunctionObjArgs(self->fallback, one, first, NULL);
    Py_DECREF(one);
    Py_XDECREF(first);
    if (result == NULL) {
        return -1;
    }
    int ok = 0;
    if (PyTuple_CheckExact(result) && PyTuple_GET_SIZE(result) == 2 && PyList_CheckExact(PyTuple_GET_ITEM(result, 0)) &&
        PyList_CheckExact(PyTuple_GET_ITEM(result, 1))) {
        PyObject *got_rows = PyTuple_GET_ITEM(result, 0), *got_rejected = PyTuple_GET_ITEM(result, 1);
        ok = PyList_SetSlice(rows, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, got_rows) == 0 &&
             PyList_SetSlice(rejected, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, got_rejected) == 0;
    }
    else {
        PyErr_SetString(PyExc_TypeError, "convert_many must return (rows, rejected) lists");
    }
    Py_DECREF(result);
    return ok ? 0 : -1;
}

PyDoc_STRVAR(convert_many_doc,
"convert_many(tuples, first_seq) -> (rows, rejected)\n\n"
"What the reference convert_many returns for the same tuples.");

static PyObject *
Converter_convert_many(Converter *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Converter.__init__ was not called");
        return NULL;
    }
    long long first_seq = 0;
    int usable = nargs == 2 && (PyList_CheckExact(args[0]) || PyTuple_CheckExact(args[0])) && PyLong_CheckExact(args[1]);
    if (usable) {
        int overflow;
        first_seq = PyLong_AsLongLongAndOverflow(args[1], &overflow);
        if (first_seq == -1 && PyErr_Occurred()) {
            return NULL;
        }
        usable = !overflow && first_seq > -(1LL << 62) && first_seq < (1LL << 62);
    }
    if (!usable) {
        return PyObject_Vectorcall(self->fallback, args, (size_t)nargs, NULL);
    }
    PyObject *tuples = args[0];
    PyObject *rows = PyList_New(0), *rejected = PyList_New(0);
    if (rows == NULL || rejected == NULL) {
        goto fail;
    }
    /* By index each time, and the item held while used: the fallback runs Python code. */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(tuples); i++) {
        PyObject *values = Py_NewRef(PySequence_Fast_GET_ITEM(tuples, i));
        PyObject *row = NULL;
        int found = cdc_fast_row(self, values, first_seq + i, &row);
        if (found > 0) {
            found = PyList_Append(rows, row) == 0 ? 1 : -1;
            Py_DECREF(row);
        }
        else if (found == 0) {
            found = cdc_slow_row(self, values, first_seq + i, rows, rejected) == 0 ? 1 : -1;
        }
        Py_DECREF(values);
        if (found < 0) {
            goto fail;
        }
    }
    PyObject *result = PyTuple_Pack(2, rows, rejected);
    Py_DECREF(rows);
    Py_DECREF(rejected);
    return result;

fail:
    Py_XDECREF(rows);
    Py_XDECREF(rejected);
    return NULL;
}

/* -- the type -------------------------------------------------------------------------------- */

static int
Converter_init(Converter *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"index", "width", "low", "high", "max_payload", "strings", "convert_many", "binary",
                            "transactions", NULL};
    PyObject *index, *strings, *fallback, *transactions = NULL;
    Py_ssize_t width, max_payload;
    long long low, high;
    int binary = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!nLLnO!O|$pO:Converter", names, &PyTuple_Type, &index, &width,
                                     &low, &high, &max_payload, &PyDict_Type, &strings, &fallback, &binary,
                                     &transactions)) {
        return -1;
    }
    if (transactions == Py_None) {
        transactions = NULL;
    }
    if (transactions != NULL && !PyCallable_Check(transactions)) {
        PyErr_SetString(PyExc_TypeError, "Converter: transactions must be callable");
        return -1;
    }
    /* Binary bounds are compared before the epoch is added: keep them where that cannot overflow. */
    if (binary && (low < -(1LL << 60) || high > (1LL << 60))) {
        PyErr_SetString(PyExc_ValueError, "Converter: binary bounds must lie within 2**60 microseconds of 1970");
        return -1;
    }
    if (PyTuple_GET_SIZE(index) != N_INDEX || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "Converter: index must hold 7 column positions, convert_many be callable");
        return -1;
    }
    for (int i = 0; i < N_INDEX; i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(index, i));
        if (at == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (at < 0 || at >= width) {
            PyErr_SetString(PyExc_ValueError, "Converter: a column position is outside the row");
            return -1;
        }
        self->index[i] = at;
    }
    self->width = width;
    self->low = low;
    self->high = high;
    self->max_payload = max_payload;
    self->binary = binary;
    Py_XSETREF(self->strings, Py_NewRef(strings));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->transactions, Py_XNewRef(transactions));
    self->last_at_size = 0;
    cdc_clear_shared(self);
    return 0;
}

static int
Converter_traverse(Converter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->strings);
    Py_VISIT(self->fallback);
    Py_VISIT(self->transactions);
    return 0;  /* the cache holds bytes and str, which refer to nothing */
}

static int
Converter_clear(Converter *self)
{
    Py_CLEAR(self->strings);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->transactions);
    cdc_clear_shared(self);
    return 0;
}

static void
Converter_dealloc(Converter *self)
{
    PyObject_GC_UnTrack(self);
    Converter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Converter_methods[] = {
    {"convert_many", (PyCFunction)(void (*)(void))Converter_convert_many, METH_FASTCALL, convert_many_doc},
    {"convert_transactions", (PyCFunction)(void (*)(void))cdc_convert_transactions, METH_FASTCALL,
     cdc_convert_transactions_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Converter_doc,
"Converter(index, width, low, high, max_payload, strings, convert_many, *, binary=False, transactions=None)\n\n"
"Compiled RowConverter.convert_many (with ``binary``: BinaryRowConverter's, for an outbox\n"
"of timestamptz occurred_at, jsonb payload, text unique_id): ``index`` the positions of REQUIRED_COLUMNS,\n"
"``width`` the relation's column count, ``low``/``high`` the occurred_at bounds in\n"
"Unix microseconds, ``strings`` the converter's shared-string table (read only), and\n"
"``convert_many`` the reference, which gets every row this does not take, and ``transactions``\n"
"the reference convert_transactions, which gets every odd call of it.");

static PyTypeObject Converter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc._accel.Converter",
    .tp_basicsize = sizeof(Converter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Converter_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Converter_init,
    .tp_traverse = (traverseproc)Converter_traverse,
    .tp_clear = (inquiry)Converter_clear,
    .tp_dealloc = (destructor)Converter_dealloc,
    .tp_methods = Converter_methods,
};

int
cdc_accel_add_converter(PyObject *module)
{
    return PyModule_AddType(module, &Converter_Type);  /* readied, and added by its name */
}
