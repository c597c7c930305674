/* What the parts of cdc._accel share: each part adds its type to the module. */
#ifndef CDC_ACCEL_H
#define CDC_ACCEL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

int cdc_accel_add_decoder(PyObject *module);    /* _accel.c: InsertDecoder */
int cdc_accel_add_converter(PyObject *module);  /* _accel_convert.c: Converter */
int cdc_accel_add_dedup(PyObject *module);      /* _accel_dedup.c: insert_ids */

#endif
