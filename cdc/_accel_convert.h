/* What the compiled Converter's parts share (_accel_convert.c, _accel_values.c, _accel_transactions.c). */
#ifndef CDC_ACCEL_CONVERT_H
#define CDC_ACCEL_CONVERT_H

#include "_accel.h"

enum { I_ID, I_UID, I_TYPE, I_AT, I_ENV, I_PAYLOAD, I_VERSION, N_INDEX };

/* The longest timestamptz text parse_timestamptz takes. */
#define MAX_AT 35
/* Shared-string cache slots, a power of two; each string may sit in its slot or the next. */
#define CACHE_SLOTS 256

/* A required value's bytes, and the bytes object holding exactly them when there is one (borrowed). */
typedef struct {
    const char *data;
    Py_ssize_t size;
    PyObject *object;
} Cell;

typedef struct {
    PyObject_HEAD
    Py_ssize_t index[N_INDEX];  /* column positions, in REQUIRED_COLUMNS order */
    Py_ssize_t width;
    long long low, high;        /* occurred_at bounds, Unix microseconds */
    Py_ssize_t max_payload;
    PyObject *strings;          /* the converter's shared strings: bytes -> str */
    PyObject *fallback;         /* the reference convert_many(tuples, first_seq) */
    PyObject *transactions;     /* the reference convert_transactions(tuples, txns), or NULL */
    char last_at[MAX_AT];       /* the last occurred_at parsed (text), last_at_size bytes of it; */
    Py_ssize_t last_at_size;    /* 0: none */
    long long last_micros;
    int binary;                 /* values in pgoutput's binary format (BinaryRowConverter) */
    /* Entries of ``strings`` already met in a WireTuple, found by their bytes without making a bytes
       object: a slot's key (bytes) and text (str) are both set or both NULL. */
    PyObject *cache_key[CACHE_SLOTS];
    PyObject *cache_text[CACHE_SLOTS];
} Converter;

/* 2000-01-01 in Unix microseconds: binary timestamps count from there. */
#define PG_EPOCH_UNIX_MICROS 946684800000000LL

/* _accel_values.c: one value read. Each returns 1 and the value, or 0 when the value is not plainly
   well-formed (then the reference decides; no exception). */
int cdc_parse_timestamptz(const unsigned char *s, Py_ssize_t n, long long *micros);
int cdc_parse_int(const Cell *value, long long *out);     /* decimal text, as PostgreSQL prints int4, int8 */
int cdc_parse_be_int(const Cell *value, long long *out);  /* big-endian, 2, 4 or 8 bytes */
/* The table's str for a value's bytes (a new reference), or NULL: not in the table, or an error set. */
PyObject *cdc_shared(Converter *self, const Cell *value);
void cdc_clear_shared(Converter *self);

/* _accel_convert.c: one row. fast_row: 1 and a new row; 0 when the reference must look at it; -1 on error.
   slow_row: the reference's verdict on one row appended to rows and rejected; 0, or -1 on error. */
int cdc_fast_row(Converter *self, PyObject *values, long long seq, PyObject **row);
int cdc_slow_row(Converter *self, PyObject *values, long long seq, PyObject *rows, PyObject *rejected);

/* _accel_transactions.c: Converter.convert_transactions. */
PyObject *cdc_convert_transactions(Converter *self, PyObject *const *args, Py_ssize_t nargs);
extern const char cdc_convert_transactions_doc[];

#endif
