/* set_levels: one side's levels into a Binance-style book, and the window integration (part of
 * moonstream._native, see module.c). */

#include "native.h"

/* ---- set_levels ----------------------------------------------------------------------------- */

/* Python's truth of `a <op> b`, as the interpreter evaluates `if a <op> b:` (no identity shortcut):
 * 1, 0, or -1 with an error set. */
int
native_compare(PyObject *a, PyObject *b, int op)
{
    PyObject *result = PyObject_RichCompare(a, b, op);
    if (result == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

/* compare(price, tops[index], op) holding a reference to the item, as the list could change if a
 * comparison ran Python code (it does not for decimals; bisect does the same). */
static int
compare_item(PyObject *price, PyObject *tops, Py_ssize_t index, int op)
{
    PyObject *item = Py_NewRef(PyList_GET_ITEM(tops, index));
    int truth = native_compare_values(price, item, op);
    Py_DECREF(item);
    return truth;
}

/* `tops[index] < price` (reverse: `price < tops[index]`) as bisect evaluates it, item held. */
static int
less_than_item(PyObject *price, PyObject *tops, Py_ssize_t index, int reverse)
{
    PyObject *item = Py_NewRef(PyList_GET_ITEM(tops, index));
    int less = reverse ? native_compare_values(price, item, Py_LT)
                       : native_compare_values(item, price, Py_LT);
    Py_DECREF(item);
    return less;
}

/* bisect.insort_right(tops, price): 0, or -1 with an error set. */
static int
insort_right(PyObject *tops, PyObject *price)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(tops);
    while (lo < hi) {
        Py_ssize_t mid = ((size_t)lo + hi) / 2;
        int less = less_than_item(price, tops, mid, 1);
        if (less < 0) {
            return -1;
        }
        if (less) {
            hi = mid;
        }
        else {
            lo = mid + 1;
        }
    }
    return PyList_Insert(tops, lo, price);
}

/* bisect.bisect_left(tops, price) */
static Py_ssize_t
bisect_left(PyObject *tops, PyObject *price)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(tops);
    while (lo < hi) {
        Py_ssize_t mid = ((size_t)lo + hi) / 2;
        int less = less_than_item(price, tops, mid, 0);
        if (less < 0) {
            return -1;
        }
        if (less) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

/* `del tops[index]` for a non-negative index */
static int
delete_at(PyObject *tops, Py_ssize_t index)
{
    if (index >= PyList_GET_SIZE(tops)) {
        PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
        return -1;
    }
    return PyList_SetSlice(tops, index, index + 1, NULL);
}

/* A new price of the side: into the best prices when within them (the Python code's insertion). */
static int
insert_top(PyObject *tops, PyObject *price, int bids, Py_ssize_t kept)
{
    Py_ssize_t size = PyList_GET_SIZE(tops);
    int beyond;
    if (size == 0) {
        return PyList_Append(tops, price);
    }
    if (bids) {
        beyond = compare_item(price, tops, size - 1, Py_GT);
        if (beyond < 0) {
            return -1;
        }
        if (beyond) {
            if (PyList_Append(tops, price) < 0) {
                return -1;
            }
        }
        else {
            int within = compare_item(price, tops, 0, Py_GT);
            if (within < 0 || (within && insort_right(tops, price) < 0)) {
                return -1;
            }
        }
        if (PyList_GET_SIZE(tops) > 2 * kept) {
            return PyList_SetSlice(tops, 0, kept, NULL);
        }
        return 0;
    }
    beyond = compare_item(price, tops, 0, Py_LT);
    if (beyond < 0) {
        return -1;
    }
    if (beyond) {
        if (PyList_Insert(tops, 0, price) < 0) {
            return -1;
        }
    }
    else {
        int within = compare_item(price, tops, size - 1, Py_LT);
        if (within < 0 || (within && insort_right(tops, price) < 0)) {
            return -1;
        }
    }
    if (PyList_GET_SIZE(tops) > 2 * kept) {
        return PyList_SetSlice(tops, kept, PyList_GET_SIZE(tops), NULL);
    }
    return 0;
}

/* A deleted price of the side: out of the best prices when among them. Returns 1 when the best
 * prices ran out while the side still has levels (the caller rebuilds them), 0, or -1. */
static int
remove_top(PyObject *tops, PyObject *book, PyObject *price, int bids)
{
    Py_ssize_t size = PyList_GET_SIZE(tops);
    if (size == 0) {
        return 0;
    }
    int among = bids ? compare_item(price, tops, 0, Py_GE)
                     : compare_item(price, tops, size - 1, Py_LE);
    if (among <= 0) {
        return among;
    }
    int best = compare_item(price, tops, bids ? size - 1 : 0, Py_EQ);
    if (best < 0) {
        return -1;
    }
    if (best) {
        Py_ssize_t at = bids ? size - 1 : 0;
        if (PyList_SetSlice(tops, at, at + 1, NULL) < 0) {
            return -1;
        }
    }
    else {
        Py_ssize_t at = bisect_left(tops, price);
        if (at < 0 || delete_at(tops, at) < 0) {
            return -1;
        }
    }
    return PyList_GET_SIZE(tops) == 0 && PyDict_GET_SIZE(book) > 0;
}

/* The bucket of `price` on a window's grid: `int(price // step)` from exact values (exact.c) for
 * plain decimals, else `index[price]`, else `index_miss(index, step, price)` (setting *called first,
 * when given), minus i_min. 0 with *j set, or -1 with an error set. */
int
native_bucket_of(PyObject *index, PyObject *step, PyObject *index_miss, long long i_min, PyObject *price,
                 long long *j, int *called)
{
    long long i;
    int exact = native_exact_bucket(price, step, &i);
    if (exact < 0) {
        return -1;
    }
    if (exact > 0) {
        *j = i - i_min;
        return 0;
    }
    PyObject *bucket = native_lookup(index, price);
    if (bucket != NULL) {
        i = PyLong_AsLongLong(bucket);
    }
    else {
        if (PyErr_Occurred()) {
            return -1;
        }
        if (called != NULL) {
            *called = 1;
        }
        PyObject *computed = PyObject_CallFunctionObjArgs(index_miss, index, step, price, NULL);
        if (computed == NULL) {
            return -1;
        }
        i = PyLong_AsLongLong(computed);
        Py_DECREF(computed);
    }
    if (i == -1 && PyErr_Occurred()) {
        return -1;
    }
    *j = i - i_min;
    return 0;
}

/* `acc[j] += float(value) * (t - since)` and `last[j] = t` in doubles, for an ExactSum, a float
 * integral and integer times less than 2**53 apart: the same IEEE operations as the Python floats
 * (the int difference converts exactly). 1 when done, 0 for the generic path, -1 with an error set. */
static int
integrate_exact(Window *w, long long j, PyObject *value, PyObject *since, PyObject *t)
{
    PyObject *integral = PyList_GET_ITEM(w->acc, j);
    if (!native_is_exact(value) || !PyFloat_CheckExact(integral) || !PyLong_CheckExact(since) ||
        !PyLong_CheckExact(t)) {
        return 0;
    }
    int overflow_t = 0, overflow_since = 0;
    long long end = PyLong_AsLongLongAndOverflow(t, &overflow_t);
    long long start = PyLong_AsLongLongAndOverflow(since, &overflow_since);
    if (overflow_t || overflow_since || end > (1LL << 62) || end < -(1LL << 62) || start > (1LL << 62) ||
        start < -(1LL << 62) || end - start >= (1LL << 53) || start - end >= (1LL << 53)) {
        return 0;
    }
    double level;
    if (native_exact_float(value, &level) < 0) {
        return -1;
    }
    PyObject *total = PyFloat_FromDouble(PyFloat_AS_DOUBLE(integral) + level * (double)(end - start));
    if (total == NULL) {
        return -1;
    }
    PyList_SetItem(w->acc, j, total);
    PyList_SetItem(w->last, j, Py_NewRef(t));
    return 1;
}

/* `cur[j] = price * (qty - old)` (value None) or `cur[j] = value + price * (qty - old)`, integrating
 * `float(value) * (t - since)` into acc[j] first when the bucket last changed before t. The sums are
 * ExactSums while exact (exact.c): the same values, floats and truth as the Python loop's Decimals. */
static int
integrate(Window *w, PyObject *price, PyObject *qty, PyObject *old, PyObject *t)
{
    long long j;
    if (native_bucket_of(w->index, w->step, w->index_miss, w->i_min, price, &j, &w->called) < 0) {
        return -1;
    }
    if (j < 0 || j >= w->n) {
        return 0;
    }
    if (j >= PyList_GET_SIZE(w->cur) || j >= PyList_GET_SIZE(w->last) || j >= PyList_GET_SIZE(w->acc)) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return -1;
    }
    PyObject *value = PyList_GET_ITEM(w->cur, j);
    if (value == Py_None) {
        PyObject *notional = native_exact_notional(price, qty, old);
        if (notional == NULL) {
            return -1;
        }
        PyList_SetItem(w->cur, j, notional); /* steals notional */
        PyList_SetItem(w->last, j, Py_NewRef(t));
        return 0;
    }
    Py_INCREF(value);
    PyObject *since = Py_NewRef(PyList_GET_ITEM(w->last, j));
    int moved = native_compare(since, t, Py_NE);
    int failed = moved < 0;
    if (moved > 0) {
        int done = integrate_exact(w, j, value, since, t);
        failed = done < 0;
        moved = done == 0;
    }
    if (moved > 0) {
        PyObject *level = PyNumber_Float(value);
        PyObject *elapsed = level == NULL ? NULL : PyNumber_Subtract(t, since);
        PyObject *area = elapsed == NULL ? NULL : PyNumber_Multiply(level, elapsed);
        PyObject *integral = Py_NewRef(PyList_GET_ITEM(w->acc, j));
        PyObject *total = area == NULL ? NULL : PyNumber_InPlaceAdd(integral, area);
        Py_DECREF(integral);
        Py_XDECREF(level);
        Py_XDECREF(elapsed);
        Py_XDECREF(area);
        if (total == NULL) {
            failed = 1;
        }
        else {
            PyList_SetItem(w->acc, j, total);
            PyList_SetItem(w->last, j, Py_NewRef(t));
        }
    }
    if (!failed) {
        /* held by the list and here: an ExactSum may then change in place */
        PyObject *sum = native_exact_add_notional(value, 2, price, qty, old);
        if (sum == NULL) {
            failed = 1;
        }
        else if (sum == value) {
            Py_DECREF(sum);
        }
        else {
            PyList_SetItem(w->cur, j, sum);
        }
    }
    Py_DECREF(since);
    Py_DECREF(value);
    return failed ? -1 : 0;
}

int
native_window_from(PyObject *arrays, PyObject *index_miss, Window *w)
{
    if (!PyTuple_CheckExact(arrays) || PyTuple_GET_SIZE(arrays) != 7) {
        return 0;
    }
    w->index = PyTuple_GET_ITEM(arrays, 0);
    w->step = PyTuple_GET_ITEM(arrays, 1);
    w->cur = PyTuple_GET_ITEM(arrays, 4);
    w->last = PyTuple_GET_ITEM(arrays, 5);
    w->acc = PyTuple_GET_ITEM(arrays, 6);
    w->index_miss = index_miss;
    PyObject *i_min = PyTuple_GET_ITEM(arrays, 2), *n = PyTuple_GET_ITEM(arrays, 3);
    if (!PyDict_CheckExact(w->index) || !PyList_CheckExact(w->cur) || !PyList_CheckExact(w->last) ||
        !PyList_CheckExact(w->acc) || !PyLong_CheckExact(i_min) || !PyLong_CheckExact(n)) {
        return 0;
    }
    int overflow_min = 0, overflow_n = 0;
    w->i_min = PyLong_AsLongLongAndOverflow(i_min, &overflow_min);
    w->n = PyLong_AsLongLongAndOverflow(n, &overflow_n);
    if (PyErr_Occurred()) {
        return -1;
    }
    return !overflow_min && !overflow_n && w->i_min > LLONG_MIN / 2 && w->i_min < LLONG_MAX / 2;
}

/* The loop of BinanceBook._set_levels over `levels` (an exact tuple of exact 2-tuples), `*tops` a
 * new reference to the side's best prices (replaced when they run out and `side_tops(side)` rebuilds
 * them), `window` NULL when not integrating. 0, or -1 with an error set. */
int
native_apply_levels(PyObject *book, PyObject **tops_ref, PyObject *levels, PyObject *side, int bids,
                    PyObject *t, Window *window, PyObject *side_tops, Py_ssize_t kept, PyObject *zero)
{
    Py_ssize_t n = PyTuple_GET_SIZE(levels);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *level = PyTuple_GET_ITEM(levels, i);
        PyObject *price = PyTuple_GET_ITEM(level, 0), *qty = PyTuple_GET_ITEM(level, 1);
        PyObject *old = PyDict_GetItemWithError(book, price);
        if (old == NULL && PyErr_Occurred()) {
            return -1;
        }
        Py_XINCREF(old);
        int nonzero = PyObject_IsTrue(qty);
        if (nonzero < 0) {
            Py_XDECREF(old);
            return -1;
        }
        if (nonzero) {
            if (PyDict_SetItem(book, price, qty) < 0) {
                Py_XDECREF(old);
                return -1;
            }
            if (old == NULL) {
                if (insert_top(*tops_ref, price, bids, kept) < 0) {
                    return -1;
                }
                old = Py_NewRef(zero); /* the Python code's _ZERO */
            }
            else {
                int same = native_compare_values(old, qty, Py_EQ);
                if (same != 0) {
                    Py_DECREF(old);
                    if (same < 0) {
                        return -1;
                    }
                    continue;
                }
            }
        }
        else if (old != NULL) {
            if (PyDict_DelItem(book, price) < 0) {
                Py_DECREF(old);
                return -1;
            }
            int ran_out = remove_top(*tops_ref, book, price, bids);
            if (ran_out < 0) {
                Py_DECREF(old);
                return -1;
            }
            if (ran_out) {
                PyObject *rebuilt = PyObject_CallOneArg(side_tops, side);
                if (rebuilt == NULL || !PyList_CheckExact(rebuilt)) {
                    if (rebuilt != NULL) {
                        PyErr_SetString(PyExc_TypeError, "side_tops must return a list");
                        Py_DECREF(rebuilt);
                    }
                    Py_DECREF(old);
                    return -1;
                }
                Py_SETREF(*tops_ref, rebuilt);
            }
        }
        else {
            continue;
        }
        int failed = window != NULL ? integrate(window, price, qty, old, t) : 0;
        Py_DECREF(old);
        if (failed < 0) {
            return -1;
        }
    }
    return 0;
}

/* `levels` is an exact tuple of exact 2-tuples (the shape apply_levels takes) */
int
native_levels_shape(PyObject *levels)
{
    if (!PyTuple_CheckExact(levels)) {
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(levels);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *level = PyTuple_GET_ITEM(levels, i);
        if (!PyTuple_CheckExact(level) || PyTuple_GET_SIZE(level) != 2) {
            return 0;
        }
    }
    return 1;
}

PyObject *
native_set_levels(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (native_exact_refresh() < 0) { /* ExactSums only in the default-like decimal context */
        return NULL;
    }
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError,
                        "set_levels(book, tops, levels, side, t, arrays, index_miss, side_tops, "
                        "tops_kept, zero)");
        return NULL;
    }
    PyObject *book = args[0], *tops = args[1], *levels = args[2], *side = args[3], *t = args[4];
    PyObject *arrays = args[5], *index_miss = args[6], *side_tops = args[7], *zero = args[9];
    Py_ssize_t kept = PyLong_AsSsize_t(args[8]);
    if (kept == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long side_number = PyLong_AsLong(side);
    if (side_number == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int bids = side_number == 0;
    if (!PyDict_CheckExact(book) || !PyList_CheckExact(tops) || !native_levels_shape(levels)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    Window window = {0};
    int track = 0;
    if (arrays != Py_None) {
        track = native_window_from(arrays, index_miss, &window);
        if (track < 0) {
            return NULL;
        }
        if (!track) {
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    Py_INCREF(tops);
    int failed = native_apply_levels(book, &tops, levels, side, bids, t, track ? &window : NULL, side_tops, kept, zero);
    Py_DECREF(tops);
    if (failed < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}
