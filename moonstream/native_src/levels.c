/* cached_levels: a depth message's levels through the number caches (part of moonstream._native,
 * see module.c). */

#include "native.h"

/* ---- cached_levels -------------------------------------------------------------------------- */

/* `mapping[key]` for an exact dict: a borrowed value, NULL with no error on a miss, NULL with an
 * error set when hashing failed (never for the str keys of a message's fields). */
PyObject *
native_lookup(PyObject *cache, PyObject *key)
{
    return PyDict_GetItemWithError(cache, key);
}

/* A ValueError or TypeError ends _cached_levels with None; anything else propagates. */
static PyObject *
none_on_value_or_type_error(void)
{
    if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return NULL;
}

/* 1 when `text` is plain digits with at most one '.' between digits ("0.00120", "43251.1", "7"),
 * 0 otherwise; *nonzero tells whether a digit is not 0. Such a text's Decimal is finite and not
 * negative, and positive exactly when a digit is not 0: what the remember functions check. */
static int
plain_number(const char *text, Py_ssize_t len, int *nonzero)
{
    int digits = 0, point = 0;
    *nonzero = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        char c = text[i];
        if (c >= '0' && c <= '9') {
            digits++;
            *nonzero |= c != '0';
        }
        else if (c == '.' && !point && digits > 0 && i + 1 < len) {
            point = 1;
        }
        else {
            return 0;
        }
    }
    return digits > 0;
}

/* remember(text) (fields._remember / _remember_finite, filling `cache`) for a str `text`: for a plain
 * number it accepts (a price must not be all zeros) the same done here, `Decimal(text)` stored into
 * `cache`, emptied first when full; remember's Python frame and validation cost 4x the constructor,
 * and a book's sizes are mostly new texts. A new reference, Py_None (new reference) when remember
 * refuses the text, NULL on error. */
PyObject *
native_remember(PyObject *text, PyObject *cache, PyObject *remember, int positive, PyObject *const *ctx)
{
    Py_ssize_t len;
    const char *chars = PyUnicode_IS_ASCII(text) ? PyUnicode_AsUTF8AndSize(text, &len) : NULL;
    int nonzero;
    if (chars == NULL || !plain_number(chars, len, &nonzero) || (positive && !nonzero) ||
        !PyDict_CheckExact(cache)) {
        return PyObject_CallOneArg(remember, text);
    }
    Py_ssize_t limit = PyLong_AsSsize_t(ctx[CTX_CACHE_LIMIT]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *number = PyObject_CallOneArg(native_decimal_type, text);
    if (number == NULL) {
        return NULL;
    }
    if (PyDict_GET_SIZE(cache) >= limit) {
        PyDict_Clear(cache);
    }
    if (PyDict_SetItem(cache, text, number) < 0) {
        Py_DECREF(number);
        return NULL;
    }
    return number;
}

/* A number through its cache, else through `remember` (which fills the cache or returns None).
 * Returns a new reference, Py_None (new reference) for "not a valid number", NULL on error. */
static PyObject *
cached_number(PyObject *cache, PyObject *text, PyObject *remember)
{
    PyObject *value = native_lookup(cache, text);
    if (value != NULL) {
        return Py_NewRef(value);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return PyObject_CallOneArg(remember, text);
}

PyObject *
native_cached_levels(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "cached_levels(raw, positive, non_negative, remember_price, remember_qty)");
        return NULL;
    }
    PyObject *raw = args[0], *positive = args[1], *non_negative = args[2];
    PyObject *remember_price = args[3], *remember_qty = args[4];
    if (!PyList_CheckExact(raw) || !PyDict_CheckExact(positive) || !PyDict_CheckExact(non_negative)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    Py_ssize_t n = PyList_GET_SIZE(raw);
    for (Py_ssize_t i = 0; i < n; i++) {
        /* `for p, q in raw` unpacks any iterable; only lists and tuples are handled here */
        PyObject *item = PyList_GET_ITEM(raw, i);
        if (!PyList_CheckExact(item) && !PyTuple_CheckExact(item)) {
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    PyObject *out = PyTuple_New(n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n && i < PyList_GET_SIZE(raw); i++) {
        PyObject *item = PyList_GET_ITEM(raw, i);
        PyObject *p, *q;
        if (PyList_CheckExact(item) && PyList_GET_SIZE(item) == 2) {
            p = PyList_GET_ITEM(item, 0);
            q = PyList_GET_ITEM(item, 1);
        }
        else if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
            p = PyTuple_GET_ITEM(item, 0);
            q = PyTuple_GET_ITEM(item, 1);
        }
        else {
            Py_DECREF(out);
            Py_RETURN_NONE; /* unpacking would raise ValueError */
        }
        Py_INCREF(p);
        Py_INCREF(q);
        PyObject *p_dec = cached_number(positive, p, remember_price);
        PyObject *q_dec = p_dec == NULL ? NULL : cached_number(non_negative, q, remember_qty);
        Py_DECREF(p);
        Py_DECREF(q);
        if (q_dec == NULL) {
            Py_XDECREF(p_dec);
            Py_DECREF(out);
            return none_on_value_or_type_error();
        }
        if (p_dec == Py_None || q_dec == Py_None) {
            Py_DECREF(p_dec);
            Py_DECREF(q_dec);
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        PyObject *level = PyTuple_New(2);
        if (level == NULL) {
            Py_DECREF(p_dec);
            Py_DECREF(q_dec);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(level, 0, p_dec);
        PyTuple_SET_ITEM(level, 1, q_dec);
        PyTuple_SET_ITEM(out, i, level);
    }
    if (PyList_GET_SIZE(raw) != n) { /* a remember callback changed the list: let Python redo it */
        Py_DECREF(out);
        Py_RETURN_NOTIMPLEMENTED;
    }
    return out;
}
