/* What the parts of cdc._accel share: each part adds its type to the module. */
#ifndef CDC_ACCEL_H
#define CDC_ACCEL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* -- the wire's big-endian fields, and a TupleData's values (every decoder reads them alike) ---------------- */

static inline uint16_t
cdc_read_u16(const unsigned char *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | (unsigned)p[1]);
}

static inline uint32_t
cdc_read_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline uint64_t
cdc_read_u64(const unsigned char *p)
{
    return ((uint64_t)cdc_read_u32(p) << 32) | cdc_read_u32(p + 4);
}

#define CDC_VALUE_NULL (-1)       /* 'n' */
#define CDC_VALUE_UNCHANGED (-2)  /* 'u': an unchanged TOAST value, not sent */
#define CDC_VALUE_MALFORMED (-3)

/*
 * The TupleData value at data[*pos:end]: the length of its bytes ('t' or 'b'), which start at *start, or
 * CDC_VALUE_NULL or CDC_VALUE_UNCHANGED; *pos is moved past it. CDC_VALUE_MALFORMED (nothing moved) when it
 * does not decode: the caller asks the reference why.
 */
static inline Py_ssize_t
cdc_tuple_value(const unsigned char *data, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t *start)
{
    Py_ssize_t at = *pos;
    if (at >= end) {
        return CDC_VALUE_MALFORMED;
    }
    unsigned char kind = data[at];
    if (kind == 'n' || kind == 'u') {
        *pos = at + 1;
        return kind == 'n' ? CDC_VALUE_NULL : CDC_VALUE_UNCHANGED;
    }
    if ((kind != 't' && kind != 'b') || end - at < 5) {
        return CDC_VALUE_MALFORMED;
    }
    /* Unsigned, as the reference reads it: a negative Int32 is a huge length and fails the check. */
    uint32_t length = cdc_read_u32(data + at + 1);
    if ((uint64_t)length > (uint64_t)(end - at - 5)) {
        return CDC_VALUE_MALFORMED;
    }
    *start = at + 5;
    *pos = at + 5 + (Py_ssize_t)length;
    return (Py_ssize_t)length;
}

int cdc_accel_add_decoder(PyObject *module);    /* _accel.c: InsertDecoder */
int cdc_accel_add_converter(PyObject *module);  /* _accel_convert.c: Converter */
int cdc_accel_add_dedup(PyObject *module);      /* _accel_dedup.c: insert_ids */
int cdc_accel_add_wire(PyObject *module);       /* _accel_wire.c: copy_frames */
int cdc_accel_add_wire_tuple(PyObject *module); /* _accel_tuple.c: WireTuple */

/* _accel_tuple.c. The TupleData at data[pos:end], read from ``frame`` (referenced when it is bytes, else the
   tuple's bytes copied): 1, a new WireTuple in *values and the offset past it in *next; 0 when the bytes do
   not decode (no exception); -1 with an exception set. */
int cdc_wire_tuple(PyObject *frame, const unsigned char *data, Py_ssize_t pos, Py_ssize_t end, PyObject *unchanged,
                   PyObject **values, Py_ssize_t *next);
/* Whether ``values`` is a WireTuple. */
int cdc_wire_check(PyObject *values);
/* Value i (in range) of a WireTuple: 1 and where its bytes lie; 0 when it is NULL or an unchanged TOAST value. */
int cdc_wire_value(PyObject *values, Py_ssize_t i, const char **data, Py_ssize_t *size);

/* _accel.c's InsertDecoder, whose transactions_at is in _accel_groups.c. */
typedef struct {
    PyObject_HEAD
    PyObject *unchanged;     /* the UNCHANGED marker of cdc.pgoutput.messages */
    PyObject *fallback;      /* the reference decode_insert_at(buf, offset) */
    PyObject *fallback_runs; /* the reference insert_run_at(frames, start, offset) */
    PyObject *fallback_groups; /* the reference transactions_at(frames, start, offset, limit) */
} InsertDecoder;

/* The Insert at data[offset:end] when well-formed: 1, its new tuple and relation OID; 0 when not; -1 on error.
   With ``frame`` (the object data is read from) the tuple is a WireTuple; with NULL a tuple. */
int cdc_insert_values(PyObject *frame, const unsigned char *data, Py_ssize_t offset, Py_ssize_t end,
                      PyObject *unchanged, PyObject **values, uint32_t *relation_id);
/* The same, as a new (relation OID, tuple). */
int cdc_fast_insert(PyObject *frame, const unsigned char *data, Py_ssize_t offset, Py_ssize_t end,
                    PyObject *unchanged, PyObject **result);
/* A frame's bytes when it is bytes or a plain memoryview: 1 (release *view when *held); 0 when not. */
int cdc_frame_bytes(PyObject *frame, Py_buffer *view, int *held, const unsigned char **data, Py_ssize_t *size);
PyObject *cdc_transactions_at(InsertDecoder *self, PyObject *const *args, Py_ssize_t nargs);
extern const char cdc_transactions_at_doc[];

#endif
