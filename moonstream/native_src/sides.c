/* side_state and open_side: one side of a Binance book as state rows, and as a window's bucket
 * values at its open (part of moonstream._native, see module.c). */

#include "native.h"

/* ---- side_state ----------------------------------------------------------------------------- */

/* `get(value) or text(value)` with get = memo.get: a new reference, NULL with an error set. */
static PyObject *
memo_text(PyObject *memo, PyObject *text, PyObject *value)
{
    PyObject *found = PyDict_GetItemWithError(memo, value);
    if (found != NULL) {
        int truth = PyObject_IsTrue(found);
        if (truth < 0) {
            return NULL;
        }
        if (truth) {
            return Py_NewRef(found);
        }
    }
    else if (PyErr_Occurred()) {
        return NULL;
    }
    return PyObject_CallOneArg(text, value);
}

/* One side of BinanceBook.state_and_levels: (_side_sorted(book, descending), _rows(its items)) with
 * _rows' memo and text function. NotImplemented for a book or memo that is not an exact dict. */
PyObject *
native_side_state(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "side_state(book, descending, memo, text)");
        return NULL;
    }
    PyObject *book = args[0], *descending = args[1], *memo = args[2], *text = args[3];
    if (!PyDict_CheckExact(book) || !PyDict_CheckExact(memo)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *side = NULL, *rows = NULL;
    /* sorted(book, reverse=descending): a list of the keys, sorted by its sort method */
    PyObject *keys = PySequence_List(book);
    if (keys == NULL) {
        return NULL;
    }
    PyObject *sort = PyObject_GetAttrString(keys, "sort");
    PyObject *kwargs = sort == NULL ? NULL : Py_BuildValue("{s:O}", "reverse", descending);
    PyObject *empty = kwargs == NULL ? NULL : PyTuple_New(0);
    PyObject *sorted = empty == NULL ? NULL : PyObject_Call(sort, empty, kwargs);
    Py_XDECREF(sort);
    Py_XDECREF(kwargs);
    Py_XDECREF(empty);
    if (sorted == NULL) {
        goto error;
    }
    Py_DECREF(sorted);
    /* {p: book[p] for p in keys} */
    side = PyDict_New();
    if (side == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *price = Py_NewRef(PyList_GET_ITEM(keys, i));
        PyObject *qty = PyObject_GetItem(book, price);
        int failed = qty == NULL || PyDict_SetItem(side, price, qty) < 0;
        Py_DECREF(price);
        Py_XDECREF(qty);
        if (failed) {
            goto error;
        }
    }
    /* [[get(p) or text(p), get(q) or text(q)] for p, q in side.items()] */
    rows = PyList_New(0);
    if (rows == NULL) {
        goto error;
    }
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(side);
    PyObject *key, *item;
    while (PyDict_Next(side, &pos, &key, &item)) {
        PyObject *price = Py_NewRef(key), *qty = Py_NewRef(item);
        PyObject *price_text = memo_text(memo, text, price);
        PyObject *qty_text = price_text == NULL ? NULL : memo_text(memo, text, qty);
        PyObject *row = qty_text == NULL ? NULL : PyList_New(2);
        Py_DECREF(price);
        Py_DECREF(qty);
        if (row == NULL) {
            Py_XDECREF(price_text);
            Py_XDECREF(qty_text);
            goto error;
        }
        PyList_SET_ITEM(row, 0, price_text);
        PyList_SET_ITEM(row, 1, qty_text);
        int failed = PyList_Append(rows, row);
        Py_DECREF(row);
        if (failed < 0) {
            goto error;
        }
        if (PyDict_GET_SIZE(side) != size) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            goto error;
        }
    }
    Py_DECREF(keys);
    return Py_BuildValue("(NN)", side, rows);
error:
    Py_DECREF(keys);
    Py_XDECREF(side);
    Py_XDECREF(rows);
    return NULL;
}

/* ---- open_side ------------------------------------------------------------------------------ */

/* WindowAccumulator.open_book's loop over one side: the new `cur` list, each bucket the sum, in the
 * dict's order, of `price * qty` of its levels (starting from `zero`), None where none. */
PyObject *
native_open_side(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "open_side(levels, index, step, i_min, n, index_miss, zero)");
        return NULL;
    }
    PyObject *levels = args[0], *index = args[1], *step = args[2], *index_miss = args[5], *zero = args[6];
    if (!PyDict_CheckExact(levels) || !PyDict_CheckExact(index) || !PyLong_CheckExact(args[3]) ||
        !PyLong_CheckExact(args[4])) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    int overflow_min = 0, overflow_n = 0;
    long long i_min = PyLong_AsLongLongAndOverflow(args[3], &overflow_min);
    long long n = PyLong_AsLongLongAndOverflow(args[4], &overflow_n);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (overflow_min || overflow_n || i_min <= LLONG_MIN / 2 || i_min >= LLONG_MAX / 2 || n < 0 ||
        n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(PyObject *)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *cur = PyList_New((Py_ssize_t)n); /* [None] * n */
    if (cur == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < (Py_ssize_t)n; k++) {
        PyList_SET_ITEM(cur, k, Py_NewRef(Py_None));
    }
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(levels);
    PyObject *key, *item;
    while (PyDict_Next(levels, &pos, &key, &item)) {
        PyObject *price = Py_NewRef(key), *qty = Py_NewRef(item);
        long long j;
        int failed = native_bucket_of(index, step, index_miss, i_min, price, &j, NULL);
        if (!failed && 0 <= j && j < n) {
            PyObject *value = PyList_GET_ITEM(cur, j);
            PyObject *notional = PyNumber_Multiply(price, qty);
            PyObject *sum = notional == NULL ? NULL
                                             : PyNumber_Add(value == Py_None ? zero : value, notional);
            Py_XDECREF(notional);
            if (sum == NULL) {
                failed = 1;
            }
            else {
                PyList_SetItem(cur, j, sum); /* steals sum, releases the old value */
            }
        }
        Py_DECREF(price);
        Py_DECREF(qty);
        if (failed) {
            Py_DECREF(cur);
            return NULL;
        }
        if (PyDict_GET_SIZE(levels) != size) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            Py_DECREF(cur);
            return NULL;
        }
    }
    return cur;
}
