/*
 * cdc._accel.Converter: RowConverter.convert_many (cdc/outbox.py) for the rows that are plainly fine.
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
 */
#include "_accel.h"

#include <stdint.h>
#include <string.h>

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

/* -- parsing --------------------------------------------------------------------------------- */

static int
digits(const unsigned char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

static int
is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static long long
days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/*
 * Unix microseconds of a timestamptz as PostgreSQL prints it; 0 when the text
 * has any other shape or is not a valid instant (then the reference decides).
 */
static int
parse_timestamptz(const unsigned char *s, Py_ssize_t n, long long *micros)
{
    int year, month, day, hour, minute, second, frac = 0, off_h, off_m = 0;
    if (n < 22 || n > 35) {
        return 0;
    }
    if (!digits(s, 4, &year) || s[4] != '-' || !digits(s + 5, 2, &month) || s[7] != '-' ||
        !digits(s + 8, 2, &day) || s[10] != ' ' || !digits(s + 11, 2, &hour) || s[13] != ':' ||
        !digits(s + 14, 2, &minute) || s[16] != ':' || !digits(s + 17, 2, &second)) {
        return 0;
    }
    Py_ssize_t pos = 19;
    if (s[pos] == '.') {
        int count = 0;
        pos++;
        while (pos < n && count < 7 && s[pos] >= '0' && s[pos] <= '9') {
            frac = frac * 10 + (s[pos] - '0');
            pos++;
            count++;
        }
        if (count < 1 || count > 6) {
            return 0;
        }
        for (; count < 6; count++) {
            frac *= 10;
        }
    }
    if (n - pos != 3 && n - pos != 6) {
        return 0;
    }
    int sign = s[pos] == '+' ? 1 : s[pos] == '-' ? -1 : 0;
    if (!sign || !digits(s + pos + 1, 2, &off_h)) {
        return 0;
    }
    if (n - pos == 6 && (s[pos + 3] != ':' || !digits(s + pos + 4, 2, &off_m))) {
        return 0;
    }
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1 || month < 1 || month > 12 || day < 1 ||
        day > month_days[month - 1] + (month == 2 && is_leap(year)) ||
        hour > 23 || minute > 59 || second > 59 || off_h > 23 || off_m > 59) {
        return 0;
    }
    long long seconds = days_from_civil(year, month, day) * 86400LL + hour * 3600LL + minute * 60LL + second;
    seconds -= sign * (off_h * 3600LL + off_m * 60LL);
    *micros = seconds * 1000000LL + frac;
    return 1;
}

/* A plain decimal integer (an optional '-', 1 to 18 digits): what PostgreSQL prints for int4 and int8. */
static int
parse_int(const Cell *value, long long *out)
{
    const unsigned char *s = (const unsigned char *)value->data;
    Py_ssize_t n = value->size, i = 0;
    int negative = n > 0 && s[0] == '-';
    i += negative;
    if (n - i < 1 || n - i > 18) {
        return 0;
    }
    long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = negative ? -v : v;
    return 1;
}

/* A big-endian two's-complement integer of 2, 4 or 8 bytes, as int.from_bytes(value, "big", signed=True). */
static int
parse_be_int(const Cell *value, long long *out)
{
    Py_ssize_t n = value->size;
    if (n != 2 && n != 4 && n != 8) {
        return 0;
    }
    const unsigned char *p = (const unsigned char *)value->data;
    uint64_t u = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        u = (u << 8) | p[i];
    }
    if (n < 8) {
        uint64_t sign = (uint64_t)1 << (8 * n - 1);
        u = (u ^ sign) - sign;  /* sign-extended, in unsigned arithmetic (no overflow) */
    }
    int64_t v;
    memcpy(&v, &u, sizeof v);
    *out = v;
    return 1;
}

/* -- one row --------------------------------------------------------------------------------- */

static inline size_t
slot_of(const char *data, Py_ssize_t size)
{
    uint32_t h = 2166136261u;  /* FNV-1a: event types and environments are short */
    for (Py_ssize_t i = 0; i < size; i++) {
        h = (h ^ (unsigned char)data[i]) * 16777619u;
    }
    return h & (CACHE_SLOTS - 1);
}

static inline int
cached_as(PyObject *key, const char *data, Py_ssize_t size)
{
    return key != NULL && PyBytes_GET_SIZE(key) == size && memcmp(PyBytes_AS_STRING(key), data, (size_t)size) == 0;
}

/* A shared string for bytes already in the table: a borrowed str, or NULL (an error set only on failure). */
static PyObject *
shared(Converter *self, const Cell *value)
{
    PyObject *text;
    if (value->object != NULL) {
        text = PyDict_GetItemWithError(self->strings, value->object);
        return text != NULL && PyUnicode_CheckExact(text) ? text : NULL;
    }
    size_t slot = slot_of(value->data, value->size), other = (slot + 1) & (CACHE_SLOTS - 1);
    if (cached_as(self->cache_key[slot], value->data, value->size)) {
        return self->cache_text[slot];
    }
    if (cached_as(self->cache_key[other], value->data, value->size)) {
        return self->cache_text[other];
    }
    PyObject *key = PyBytes_FromStringAndSize(value->data, value->size);
    if (key == NULL) {
        return NULL;
    }
    text = PyDict_GetItemWithError(self->strings, key);
    if (text == NULL || !PyUnicode_CheckExact(text)) {
        Py_DECREF(key);
        return NULL;
    }
    /* The table's entries never change their text, only leave: a cached one stays right. */
    if (self->cache_key[slot] != NULL && self->cache_key[other] == NULL) {
        slot = other;
    }
    Py_XSETREF(self->cache_key[slot], key);
    Py_XSETREF(self->cache_text[slot], Py_NewRef(text));
    return text;
}

/* The bytes object of a cell: its own, or a new one. */
static PyObject *
bytes_of(const Cell *value)
{
    return value->object != NULL ? Py_NewRef(value->object) : PyBytes_FromStringAndSize(value->data, value->size);
}

/* The event row (unique_id, event_type, occurred_at, environment, payload, version, id, seq) in *row: 1, or -1
   with an exception set. ``uid`` and ``payload`` are new references (or NULL: out of memory), which this takes
   over either way. */
static int
make_row(PyObject *uid, PyObject *type, long long micros, PyObject *env, PyObject *payload, long long version,
         long long id, long long seq, PyObject **row)
{
    PyObject *out = uid == NULL || payload == NULL ? NULL : PyTuple_New(8);
    if (out == NULL) {
        Py_XDECREF(uid);
        Py_XDECREF(payload);
        return -1;
    }
    PyTuple_SET_ITEM(out, 0, uid);
    PyTuple_SET_ITEM(out, 1, Py_NewRef(type));
    PyTuple_SET_ITEM(out, 3, Py_NewRef(env));
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
    if (c[I_AT].size != 8 || !parse_be_int(&c[I_AT], &raw)) {
        return 0;
    }
    /* The bounds lie well inside int64 either way: compared before adding, nothing overflows. */
    if (raw < self->low - PG_EPOCH_UNIX_MICROS || raw > self->high - PG_EPOCH_UNIX_MICROS) {
        return 0;
    }
    if (!parse_be_int(&c[I_VERSION], &version) || version < INT32_MIN || version > INT32_MAX ||
        !parse_be_int(&c[I_ID], &id)) {
        return 0;
    }
    PyObject *type = shared(self, &c[I_TYPE]);
    PyObject *env = type == NULL ? NULL : shared(self, &c[I_ENV]);
    if (env == NULL) {
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
    PyObject *type = shared(self, &c[I_TYPE]);
    PyObject *env = type == NULL ? NULL : shared(self, &c[I_ENV]);
    if (env == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    long long version, id, micros;
    if (!parse_int(&c[I_VERSION], &version) || version < INT32_MIN || version > INT32_MAX ||
        !parse_int(&c[I_ID], &id)) {
        return 0;
    }
    if (self->last_at_size != 0 && self->last_at_size == at->size &&
        memcmp(self->last_at, at->data, (size_t)at->size) == 0) {
        micros = self->last_micros;  /* rows of one transaction usually share it */
    }
    else {
        if (!parse_timestamptz((const unsigned char *)at->data, at->size, &micros)) {
            return 0;
        }
        memcpy(self->last_at, at->data, (size_t)at->size);  /* at most MAX_AT bytes, or it would not parse */
        self->last_at_size = at->size;
        self->last_micros = micros;
    }
    if (micros < self->low || micros > self->high) {
        return 0;
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
static int
fast_row(Converter *self, PyObject *values, long long seq, PyObject **row)
{
    Cell cells[N_INDEX];
    if (!cells_of(self, values, cells)) {
        return 0;
    }
    return self->binary ? fast_binary_row(self, cells, seq, row) : fast_text_row(self, cells, seq, row);
}

/* The reference's verdict on one row: its rows and rejections appended to ours. */
static int
slow_row(Converter *self, PyObject *values, long long seq, PyObject *rows, PyObject *rejected)
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
        int found = fast_row(self, values, first_seq + i, &row);
        if (found > 0) {
            found = PyList_Append(rows, row) == 0 ? 1 : -1;
            Py_DECREF(row);
        }
        else if (found == 0) {
            found = slow_row(self, values, first_seq + i, rows, rejected) == 0 ? 1 : -1;
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

static void
clear_cache(Converter *self)
{
    for (int i = 0; i < CACHE_SLOTS; i++) {
        Py_CLEAR(self->cache_key[i]);
        Py_CLEAR(self->cache_text[i]);
    }
}

static int
Converter_init(Converter *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"index", "width", "low", "high", "max_payload", "strings", "convert_many", "binary",
                            NULL};
    PyObject *index, *strings, *fallback;
    Py_ssize_t width, max_payload;
    long long low, high;
    int binary = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!nLLnO!O|$p:Converter", names, &PyTuple_Type, &index, &width,
                                     &low, &high, &max_payload, &PyDict_Type, &strings, &fallback, &binary)) {
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
    self->last_at_size = 0;
    clear_cache(self);
    return 0;
}

static int
Converter_traverse(Converter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->strings);
    Py_VISIT(self->fallback);
    return 0;  /* the cache holds bytes and str, which refer to nothing */
}

static int
Converter_clear(Converter *self)
{
    Py_CLEAR(self->strings);
    Py_CLEAR(self->fallback);
    clear_cache(self);
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
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Converter_doc,
"Converter(index, width, low, high, max_payload, strings, convert_many, *, binary=False)\n\n"
"Compiled RowConverter.convert_many (with ``binary``: BinaryRowConverter's, for an outbox\n"
"of timestamptz occurred_at, jsonb payload, text unique_id): ``index`` the positions of REQUIRED_COLUMNS,\n"
"``width`` the relation's column count, ``low``/``high`` the occurred_at bounds in\n"
"Unix microseconds, ``strings`` the converter's shared-string table (read only), and\n"
"``convert_many`` the reference, which gets every row this does not take.");

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
    if (PyType_Ready(&Converter_Type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Converter", (PyObject *)&Converter_Type);
}
