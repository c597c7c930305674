/*
 * InsertDecoder.transactions_at: cdc/pgoutput/_groups.py's transactions_at, compiled.
 *
 * It finds whole small transactions (Begin, Inserts into one relation, Commit)
 * and the keepalives between them in a read's frames, and decodes their rows,
 * in one call. Like the rest of the accelerator it takes the
 * common case only: a frame that is not bytes or a plain memoryview, an Insert
 * the fast decoder does not take, or odd arguments hand the whole call to the
 * reference, so the two can differ only in speed
 * (tests/pgoutput/test_accel_groups.py compares them).
 */
#include "_accel.h"

#include <stdint.h>
#include <string.h>

#define XLOGDATA 'w'
#define KEEPALIVE 'k'
#define KEEPALIVE_FRAME 18 /* 'k', wal_end, send_time, reply_requested */
#define BEGIN_BODY 20      /* final_lsn, commit_time, xid */
#define COMMIT_BODY 25     /* flags, commit_lsn, end_lsn, commit_time */

/* One frame's bytes, and whether a buffer is held: see cdc_frame_bytes. */
typedef struct {
    Py_buffer view;
    int held;
    const unsigned char *data;
    Py_ssize_t size;
} Frame;

static int
frame_at(PyObject *frames, Py_ssize_t i, Frame *f)
{
    return cdc_frame_bytes(PyList_GET_ITEM(frames, i), &f->view, &f->held, &f->data, &f->size);
}

static void
frame_done(Frame *f)
{
    if (f->held) {
        PyBuffer_Release(&f->view);
        f->held = 0;
    }
}

const char cdc_transactions_at_doc[] =
"transactions_at(frames, start, offset, limit) -> (relation OID or -1, rows, transactions, keepalive, next)\n\n"
"The reference transactions_at, compiled for frames that are bytes or plain memoryviews\n"
"holding well-formed messages; anything else is the reference's.";

/* The group's transactions so far; a transaction is added whole, or not at all. */
typedef struct {
    PyObject *tuples;
    PyObject *txns;
    long long relation_id; /* -1 until a transaction with rows */
    int seen, seen_reply, pending, pending_reply;
    uint64_t seen_end, pending_end;
    int64_t seen_time, pending_time;
} Group;

/*
 * The transaction whose Begin is frames[i] (checked by the caller) and whose
 * Inserts are frames[i+1:j], Commit frames[j]: 1 when added, 0 when the group
 * ends before it, -1 with an exception set, -2 when the reference must decide.
 */
static int
add_transaction(InsertDecoder *self, PyObject *frames, Py_ssize_t i, Py_ssize_t j, Py_ssize_t offset,
                const unsigned char *begin, uint64_t end_lsn, Group *g)
{
    Py_ssize_t before = PyList_GET_SIZE(g->tuples);
    long long relation_id = g->relation_id;
    for (Py_ssize_t k = i + 1; k < j; k++) {
        Frame f;
        if (!frame_at(frames, k, &f)) {
            goto reference;
        }
        PyObject *values;
        uint32_t rid;
        int found = cdc_insert_values(PyList_GET_ITEM(frames, k), f.data, offset, f.size, self->unchanged, &values, &rid);
        frame_done(&f);
        if (found <= 0) {
            if (found < 0) {
                goto failed;
            }
            goto reference;
        }
        if (relation_id != -1 && (long long)rid != relation_id) {
            Py_DECREF(values);
            /* Inserts into two relations in one transaction, or another relation than the group's */
            return PyList_SetSlice(g->tuples, before, PyList_GET_SIZE(g->tuples), NULL) < 0 ? -1 : 0;
        }
        relation_id = rid;
        int appended = PyList_Append(g->tuples, values);
        Py_DECREF(values);
        if (appended < 0) {
            goto failed;
        }
    }
    PyObject *txn = Py_BuildValue("(nKLK)", j - i - 1, (unsigned long long)cdc_read_u64(begin),
                                  (long long)cdc_read_u64(begin + 8), (unsigned long long)end_lsn);
    if (txn == NULL) {
        goto failed;
    }
    int appended = PyList_Append(g->txns, txn);
    Py_DECREF(txn);
    if (appended < 0) {
        goto failed;
    }
    g->relation_id = relation_id;
    if (g->pending) {
        g->seen_reply |= g->pending_reply;
        g->seen_end = g->pending_end;
        g->seen_time = g->pending_time;
        g->seen = 1;
        g->pending = g->pending_reply = 0;
    }
    return 1;

reference:
    return PyList_SetSlice(g->tuples, before, PyList_GET_SIZE(g->tuples), NULL) < 0 ? -1 : -2;
failed:
    return -1;
}

static PyObject *
group_result(Group *g, Py_ssize_t done)
{
    PyObject *keepalive = Py_None;
    if (g->seen) {
        keepalive = Py_BuildValue("(KLO)", (unsigned long long)g->seen_end, (long long)g->seen_time,
                                  g->seen_reply ? Py_True : Py_False);
        if (keepalive == NULL) {
            return NULL;
        }
    }
    else {
        Py_INCREF(keepalive);
    }
    return Py_BuildValue("(LOONn)", g->relation_id, g->tuples, g->txns, keepalive, done);
}

PyObject *
cdc_transactions_at(InsertDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->fallback_groups == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "InsertDecoder.__init__ was not called");
        return NULL;
    }
    Py_ssize_t start = -1, offset = -1, limit = -1, n = 0;
    if (nargs == 4 && PyList_CheckExact(args[0]) && PyLong_CheckExact(args[1]) && PyLong_CheckExact(args[2]) &&
        PyLong_CheckExact(args[3])) {
        n = PyList_GET_SIZE(args[0]);
        start = PyLong_AsSsize_t(args[1]);
        offset = PyLong_AsSsize_t(args[2]);
        limit = PyLong_AsSsize_t(args[3]);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            start = -1;
        }
    }
    if (start < 0 || start >= n || offset < 1 || offset > (1 << 20) || limit < 0) {
        goto reference;
    }
    PyObject *frames = args[0];
    Group g = {0};
    g.relation_id = -1;
    g.tuples = PyList_New(0);
    g.txns = PyList_New(0);
    if (g.tuples == NULL || g.txns == NULL) {
        goto failed;
    }
    const Py_ssize_t begin_frame = offset + 1 + BEGIN_BODY, commit_frame = offset + 1 + COMMIT_BODY;
    Py_ssize_t i = start, done = start;
    /* No Python code runs in this loop: the list cannot change under us. */
    while (i < n) {
        Frame f;
        if (!frame_at(frames, i, &f)) {
            goto drop;
        }
        if (f.size == KEEPALIVE_FRAME && f.data[0] == KEEPALIVE) {
            g.pending_end = cdc_read_u64(f.data + 1);
            g.pending_time = (int64_t)cdc_read_u64(f.data + 9);
            g.pending_reply |= f.data[17] != 0;
            g.pending = 1;
            frame_done(&f);
            i++;
            continue;
        }
        if (f.size != begin_frame || f.data[0] != XLOGDATA || f.data[offset] != 'B') {
            frame_done(&f);
            break;
        }
        unsigned char begin[16];
        memcpy(begin, f.data + offset + 1, sizeof begin);
        frame_done(&f);
        /* Find the Commit before decoding anything: a transaction too long, or cut by the read, is the usual
         * path's, and its rows must not be decoded twice. */
        Py_ssize_t j = i + 1, end = (limit < n - i - 1) ? i + 1 + limit : n;
        for (; j < end; j++) {
            if (!frame_at(frames, j, &f)) {
                goto drop;
            }
            int is_insert = f.size > offset && f.data[0] == XLOGDATA && f.data[offset] == 'I';
            frame_done(&f);
            if (!is_insert) {
                break;
            }
        }
        if (j >= n) {
            break;
        }
        if (!frame_at(frames, j, &f)) {
            goto drop;
        }
        if (f.size != commit_frame || f.data[0] != XLOGDATA || f.data[offset] != 'C') {
            frame_done(&f);
            break;
        }
        uint64_t end_lsn = cdc_read_u64(f.data + offset + 1 + 1 + 8);
        frame_done(&f);
        int added = add_transaction(self, frames, i, j, offset, begin, end_lsn, &g);
        if (added == -2) {
            goto drop;
        }
        if (added < 0) {
            goto failed;
        }
        if (added == 0) {
            break;
        }
        i = done = j + 1;
    }
    PyObject *result = group_result(&g, done);
    Py_DECREF(g.tuples);
    Py_DECREF(g.txns);
    return result;

drop:  /* something the fast path does not take: the reference does the whole call */
    Py_DECREF(g.tuples);
    Py_DECREF(g.txns);
reference:
    return PyObject_Vectorcall(self->fallback_groups, args, (size_t)nargs, NULL);
failed:
    Py_XDECREF(g.tuples);
    Py_XDECREF(g.txns);
    return NULL;
}
