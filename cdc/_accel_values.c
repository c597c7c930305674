/*
 * The compiled Converter's reading of one value (see _accel_convert.c): PostgreSQL's
 * text integers and timestamptz, binary integers, and the shared strings of event
 * types and environments.
 */
#include "_accel_convert.h"

#include <stdint.h>
#include <string.h>

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
int
cdc_parse_timestamptz(const unsigned char *s, Py_ssize_t n, long long *micros)
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
int
cdc_parse_int(const Cell *value, long long *out)
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
int
cdc_parse_be_int(const Cell *value, long long *out)
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

/* -- shared strings --------------------------------------------------------------------------- */

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

/* A shared string for bytes already in the table: a new reference to the str, or NULL (an error set only on
   failure). A new reference, not a borrowed one: the next lookup may take the slot that held it, and the
   table may have let it go already. */
PyObject *
cdc_shared(Converter *self, const Cell *value)
{
    PyObject *text;
    if (value->object != NULL) {
        text = PyDict_GetItemWithError(self->strings, value->object);
        return text != NULL && PyUnicode_CheckExact(text) ? Py_NewRef(text) : NULL;
    }
    size_t slot = slot_of(value->data, value->size), other = (slot + 1) & (CACHE_SLOTS - 1);
    if (cached_as(self->cache_key[slot], value->data, value->size)) {
        return Py_NewRef(self->cache_text[slot]);
    }
    if (cached_as(self->cache_key[other], value->data, value->size)) {
        return Py_NewRef(self->cache_text[other]);
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
    return Py_NewRef(text);
}

void
cdc_clear_shared(Converter *self)
{
    for (int i = 0; i < CACHE_SLOTS; i++) {
        Py_CLEAR(self->cache_key[i]);
        Py_CLEAR(self->cache_text[i]);
    }
}
