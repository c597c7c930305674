/*
 * cdc._accel.insert_ids: FingerprintTable._insert_many(self._fingerprints(ids), now) (cdc/_dedup_table.py) in C.
 *
 * The fingerprint is the reference's recipe exactly: hash(uid + salt) and hash(uid)
 * of the id's UTF-8 bytes, Python's own SipHash of bytes (_Py_HashBytes, what
 * hash() of a bytes object returns), as unsigned 64-bit halves. The probe,
 * insert and backward-shift eviction are the reference's loop, statement for
 * statement, on the same arrays. It takes a batch only when every id is
 * non-empty bytes or a non-empty ASCII str (whose UTF-8 is its own data);
 * otherwise it returns None and the reference does the whole batch.
 */
#include "_accel.h"

#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030E0000
#define hash_bytes(data, size) Py_HashBuffer((data), (size))
#else
#define hash_bytes(data, size) _Py_HashBytes((data), (size))
#endif

/* How many ids ahead the probe loop prefetches: enough to cover a DRAM miss. */
#define PREFETCH_AHEAD 16

typedef struct {
    Py_buffer view;
    int held;
} Held;

static int
take(PyObject *array, Held *held, const char *format, Py_ssize_t itemsize, const char *name)
{
    if (PyObject_GetBuffer(array, &held->view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    held->held = 1;
    if (held->view.itemsize != itemsize || held->view.format == NULL || strcmp(held->view.format, format) != 0) {
        PyErr_Format(PyExc_TypeError, "insert_ids: %s must be an array('%s') of %zd-byte items", name, format, itemsize);
        return -1;
    }
    return 0;
}

static void
release(Held *held)
{
    if (held->held) {
        PyBuffer_Release(&held->view);
        held->held = 0;
    }
}

/* The id's UTF-8 bytes, without copying: 1 when it is non-empty bytes or non-empty ASCII str. */
static int
id_bytes(PyObject *uid, const char **data, Py_ssize_t *size)
{
    if (PyBytes_CheckExact(uid)) {
        *data = PyBytes_AS_STRING(uid);
        *size = PyBytes_GET_SIZE(uid);
    }
    else if (PyUnicode_CheckExact(uid) && PyUnicode_IS_COMPACT_ASCII(uid)) {
        *data = (const char *)PyUnicode_DATA(uid);
        *size = PyUnicode_GET_LENGTH(uid);
    }
    else {
        return 0;
    }
    return *size > 0;
}

PyDoc_STRVAR(insert_ids_doc,
"insert_ids(ids, salt, now, index, hi, lo, ts, mask, capacity, head, count) -> (admitted, head, count) | None\n\n"
"FingerprintTable._insert_many(self._fingerprints(ids), now) on the table's arrays; None\n"
"(nothing changed) when an id is not non-empty bytes or ASCII str: then the reference does it.");

static PyObject *
insert_ids(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *ids, *salt, *index_obj, *hi_obj, *lo_obj, *ts_obj;
    double now;
    Py_ssize_t mask_in, cap, head, count;
    if (!PyArg_ParseTuple(args, "O!O!dOOOOnnnn:insert_ids", &PyList_Type, &ids, &PyBytes_Type, &salt, &now,
                          &index_obj, &hi_obj, &lo_obj, &ts_obj, &mask_in, &cap, &head, &count)) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(ids), longest = 0;
    const char *data = NULL;
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!id_bytes(PyList_GET_ITEM(ids, i), &data, &size)) {
            Py_RETURN_NONE;
        }
        longest = size > longest ? size : longest;
    }
    Held index = {0}, hi = {0}, lo = {0}, ts = {0};
    PyObject *out = NULL;
    uint64_t *fp = NULL;
    char small[256], *joined = small;
    if (take(index_obj, &index, "I", 4, "index") < 0 || take(hi_obj, &hi, "Q", 8, "hi") < 0 ||
        take(lo_obj, &lo, "Q", 8, "lo") < 0 || take(ts_obj, &ts, "d", 8, "ts") < 0) {
        goto done;
    }
    Py_ssize_t slots = index.view.len / 4;
    if (mask_in < 0 || mask_in + 1 != slots || (slots & mask_in) != 0 || cap < 1 || cap > (Py_ssize_t)0xFFFFFFFE ||
        hi.view.len / 8 != cap || lo.view.len / 8 != cap || ts.view.len / 8 != cap || head < 0 || head >= cap ||
        count < 0 || count > cap || cap >= slots) {
        PyErr_SetString(PyExc_ValueError, "insert_ids: the table's arrays and positions do not agree");
        goto done;
    }
    uint32_t *ix = index.view.buf;
    uint64_t *hi_a = hi.view.buf, *lo_a = lo.view.buf, mask = (uint64_t)mask_in;
    double *ts_a = ts.view.buf;
    const char *salt_data = PyBytes_AS_STRING(salt);
    Py_ssize_t salt_size = PyBytes_GET_SIZE(salt);
    /* Everything that can fail is done before the first change to the table. */
    if (longest + salt_size > (Py_ssize_t)sizeof small) {
        joined = PyMem_Malloc((size_t)(longest + salt_size));
        if (joined == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    fp = PyMem_Malloc((size_t)(n ? n : 1) * 2 * sizeof(uint64_t));
    if (fp == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    out = PyList_New(n);
    if (out == NULL) {
        goto done;
    }
    /* The fingerprints first: they do not depend on the table, and knowing them
     * ahead lets the loop below prefetch the slots it will probe (a table of a
     * million ids is DRAM, a miss for every probe and every comparison). */
    for (Py_ssize_t k = 0; k < n; k++) {
        id_bytes(PyList_GET_ITEM(ids, k), &data, &size);
        fp[2 * k] = (uint64_t)hash_bytes(data, size);
        memcpy(joined, data, (size_t)size);
        memcpy(joined + size, salt_data, (size_t)salt_size);
        fp[2 * k + 1] = (uint64_t)hash_bytes(joined, size + salt_size);
    }
    for (Py_ssize_t k = 0; k < n && k < PREFETCH_AHEAD; k++) {
        __builtin_prefetch(&ix[fp[2 * k] & mask]);
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        uint64_t h = fp[2 * k], l = fp[2 * k + 1];
        /* Hints only: the slot PREFETCH_AHEAD ids on, and the entry its slot holds half as far on. */
        if (k + PREFETCH_AHEAD < n) {
            __builtin_prefetch(&ix[fp[2 * (k + PREFETCH_AHEAD)] & mask]);
        }
        if (k + PREFETCH_AHEAD / 2 < n) {
            uint32_t ahead = ix[fp[2 * (k + PREFETCH_AHEAD / 2)] & mask];
            if (ahead && ahead <= (uint64_t)cap) {
                __builtin_prefetch(&hi_a[ahead - 1]);
                __builtin_prefetch(&lo_a[ahead - 1]);
            }
        }
        if (count == cap) {
            __builtin_prefetch(&ix[hi_a[(head + PREFETCH_AHEAD / 2) % cap] & mask]);
        }

        uint64_t home = h & mask, i = home;
        uint32_t p = ix[i];
        int seen = 0;
        while (p) {
            if (p > (uint64_t)cap) {
                goto corrupt;
            }
            if (hi_a[p - 1] == h && lo_a[p - 1] == l) {
                seen = 1;
                break;
            }
            i = (i + 1) & mask;
            p = ix[i];
        }
        if (seen) {
            PyList_SET_ITEM(out, k, Py_NewRef(Py_False));
            continue;
        }
        Py_ssize_t tail;
        if (count == cap) {
            /* Full: forget the oldest (backward-shift deletion), after the lookup. */
            uint32_t target = (uint32_t)(head + 1);
            uint64_t e = hi_a[head] & mask;
            for (Py_ssize_t steps = 0; ix[e] != target; steps++) {
                if (steps > slots) {
                    goto corrupt;
                }
                e = (e + 1) & mask;
            }
            uint64_t j = e;
            for (;;) {
                j = (j + 1) & mask;
                uint32_t q = ix[j];
                if (!q) {
                    break;
                }
                if (q > (uint64_t)cap) {
                    goto corrupt;
                }
                if (((hi_a[q - 1] - e - 1) & mask) >= ((j - e) & mask)) {
                    ix[e] = q;
                    e = j;
                }
            }
            ix[e] = 0;
            if (((e - home) & mask) < ((i - home) & mask)) {
                i = e;
            }
            tail = head;
            head = (Py_ssize_t)target < cap ? (Py_ssize_t)target : 0;
        }
        else {
            tail = head + count;
            if (tail >= cap) {
                tail -= cap;
            }
            count += 1;
        }
        hi_a[tail] = h;
        lo_a[tail] = l;
        ts_a[tail] = now;
        ix[i] = (uint32_t)(tail + 1);
        PyList_SET_ITEM(out, k, Py_NewRef(Py_True));
    }
    {
        PyObject *result = Py_BuildValue("(Nnn)", out, head, count);
        out = result;
    }
    goto done;

corrupt:
    PyErr_SetString(PyExc_RuntimeError, "insert_ids: the dedup index points outside the ring");
    Py_CLEAR(out);
done:
    PyMem_Free(fp);
    if (joined != small) {
        PyMem_Free(joined);
    }
    release(&index);
    release(&hi);
    release(&lo);
    release(&ts);
    return out;
}

static PyMethodDef dedup_methods[] = {
    {"insert_ids", insert_ids, METH_VARARGS, insert_ids_doc},
    {NULL, NULL, 0, NULL},
};

int
cdc_accel_add_dedup(PyObject *module)
{
    return PyModule_AddFunctions(module, dedup_methods);
}
