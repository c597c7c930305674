/*
 * Converter.convert_transactions: cdc.core.outbox's convert_transactions, compiled.
 *
 * Live traffic comes as whole small transactions, grouped by the decoder
 * (_accel_groups.c): converting them in one call, not one call per transaction,
 * spares the interpreter a loop, a slice and a result per transaction. Rows go
 * through the same fast_row and slow_row as convert_many; an odd call goes to the
 * reference whole (tests/test_convert_equivalence.py compares the two).
 */
#include "_accel_convert.h"

const char cdc_convert_transactions_doc[] =
"convert_transactions(tuples, txns) -> (rows, commits, rejections)\n\n"
"What the reference convert_transactions (cdc.core.outbox) returns for the same whole transactions:\n"
"convert_many of each one's rows, positions from 0, in one call.";

/* Each of ``txns`` an exact (rows, commit LSN, commit time, end LSN) tuple, their rows no more than ``count``. */
static int
plain_transactions(PyObject *txns, Py_ssize_t count)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t t = 0; t < PyList_GET_SIZE(txns); t++) {
        PyObject *txn = PyList_GET_ITEM(txns, t);
        if (!PyTuple_CheckExact(txn) || PyTuple_GET_SIZE(txn) != 4 || !PyLong_CheckExact(PyTuple_GET_ITEM(txn, 0))) {
            return 0;
        }
        Py_ssize_t n = PyLong_AsSsize_t(PyTuple_GET_ITEM(txn, 0));
        if (n == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (n < 0 || n > count - total) {
            return 0;
        }
        total += n;
    }
    return 1;
}

/* One transaction's rows, tuples[start:start + n], into ``rows``; the ones the reference rejects into
   ``rejected``. 0, or -1 with an exception set. */
static int
convert_transaction(Converter *self, PyObject *tuples, Py_ssize_t start, Py_ssize_t n, PyObject *rows,
                    PyObject *rejected)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        /* By index each time, and the item held while used: the fallback runs Python code. */
        if (start + i >= PyList_GET_SIZE(tuples)) {
            PyErr_SetString(PyExc_RuntimeError, "convert_transactions: the rows changed during the call");
            return -1;
        }
        PyObject *values = Py_NewRef(PyList_GET_ITEM(tuples, start + i));
        PyObject *row = NULL;
        int found = cdc_fast_row(self, values, i, &row);
        if (found > 0) {
            found = PyList_Append(rows, row) == 0 ? 1 : -1;
            Py_DECREF(row);
        }
        else if (found == 0) {
            found = cdc_slow_row(self, values, i, rows, rejected) == 0 ? 1 : -1;
        }
        Py_DECREF(values);
        if (found < 0) {
            return -1;
        }
    }
    return 0;
}

/* Appends ``(a, b, c)`` to ``list``, b and c borrowed from the transaction and ``a`` a new reference
   (or NULL: out of memory), taken over either way. 0, or -1 with an exception set. */
static int
append_triple(PyObject *list, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *triple = a == NULL ? NULL : PyTuple_Pack(3, a, b, c);
    Py_XDECREF(a);
    if (triple == NULL) {
        return -1;
    }
    int appended = PyList_Append(list, triple);
    Py_DECREF(triple);
    return appended;
}

PyObject *
cdc_convert_transactions(Converter *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Converter.__init__ was not called");
        return NULL;
    }
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !plain_transactions(args[1], PyList_GET_SIZE(args[0]))) {
        if (self->transactions == NULL) {
            PyErr_SetString(PyExc_TypeError, "convert_transactions: made without the reference for odd calls");
            return NULL;
        }
        return PyObject_Vectorcall(self->transactions, args, (size_t)nargs, NULL);
    }
    /* A copy of the list as checked: Python code the fallback runs cannot change what is read below. */
    PyObject *tuples = args[0], *txns = PyList_AsTuple(args[1]);
    if (txns == NULL) {
        return NULL;
    }
    PyObject *rows = PyList_New(0), *commits = PyList_New(0), *rejections = PyList_New(0);
    PyObject *rejected = PyList_New(0);  /* the transaction's, reused while empty */
    if (rows == NULL || commits == NULL || rejections == NULL || rejected == NULL) {
        goto fail;
    }
    Py_ssize_t start = 0;
    for (Py_ssize_t t = 0; t < PyTuple_GET_SIZE(txns); t++) {
        PyObject *txn = PyTuple_GET_ITEM(txns, t);
        Py_ssize_t n = PyLong_AsSsize_t(PyTuple_GET_ITEM(txn, 0)), before = PyList_GET_SIZE(rows);
        if (n == 0) {
            continue;
        }
        int failed = convert_transaction(self, tuples, start, n, rows, rejected) < 0;
        start += n;
        PyObject *lsn = PyTuple_GET_ITEM(txn, 1), *time = PyTuple_GET_ITEM(txn, 2);
        if (!failed && PyList_GET_SIZE(rejected) > 0) {
            failed = append_triple(rejections, Py_NewRef(lsn), time, rejected) < 0;
            Py_SETREF(rejected, PyList_New(0));
            failed |= rejected == NULL;
        }
        if (!failed && PyList_GET_SIZE(rows) > before) {
            failed = append_triple(commits, PyLong_FromSsize_t(PyList_GET_SIZE(rows) - before), lsn, time) < 0;
        }
        if (failed) {
            goto fail;
        }
    }
    Py_DECREF(txns);
    Py_DECREF(rejected);
    PyObject *result = PyTuple_Pack(3, rows, commits, rejections);
    Py_DECREF(rows);
    Py_DECREF(commits);
    Py_DECREF(rejections);
    return result;

fail:
    Py_DECREF(txns);
    Py_XDECREF(rows);
    Py_XDECREF(commits);
    Py_XDECREF(rejections);
    Py_XDECREF(rejected);
    return NULL;
}
