/* side_state and open_side: one side of a Binance book as state rows, and as a window's bucket
 * values at its open (part of moonstream._native, see module.c). */

#include "native.h"
#include <stdint.h>

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

/* Texts of exact decimals, keyed by the object's address. A book's prices, and most of its
 * quantities (shared through depth.c's tables), are the same objects minute after minute: their
 * address costs nothing to hash, where a decimal's own hash (for a fraction, a modular power) costs
 * ~1,700 instructions, and a value new this minute would be hashed once more for the memo. Each
 * entry holds a reference to its decimal, so no other object can take the address while it is
 * there; a decimal is immutable, so its text stays right. Emptied (every reference released) when
 * full: 65,536 entries in 131,072 slots (2 MB), some minutes of a busy book's levels. */
#define PTR_BITS 17
#define PTR_SLOTS (1u << PTR_BITS)
#define PTR_LIMIT (1u << 16)

typedef struct {
    PyObject *key, *text;
    int64_t coefficient; /* the text as coefficient / 10**scale (native_decimal_exact), when exact is 1 */
    int scale, exact;    /* exact: 0 not parsed yet, 1 parsed, 2 not plain or too long */
} PtrSlot;

static PtrSlot *ptr_slots; /* PTR_SLOTS, allocated on first use */
static size_t ptr_used;

/* The first slot to probe: Fibonacci hashing of the address (its low bits are alignment zeros). */
static size_t
ptr_start(PyObject *key)
{
    return (size_t)(((uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ULL) >> (64 - PTR_BITS));
}

static void
ptr_clear(void)
{
    for (size_t i = 0; ptr_slots != NULL && i < PTR_SLOTS; i++) {
        Py_CLEAR(ptr_slots[i].key);
        Py_CLEAR(ptr_slots[i].text);
    }
    ptr_used = 0;
}

/* Remember `text` for `key` (both referenced), emptying the table first when it is full: its slot.
 * Probes from the start: Python code (the text function) may have run since the lookup. */
static PtrSlot *
ptr_store(PyObject *key, PyObject *text)
{
    if (ptr_used >= PTR_LIMIT) {
        ptr_clear();
    }
    size_t i = ptr_start(key);
    while (ptr_slots[i].key != NULL) {
        i = (i + 1) & (PTR_SLOTS - 1);
    }
    ptr_slots[i].key = Py_NewRef(key);
    ptr_slots[i].text = Py_NewRef(text);
    ptr_slots[i].exact = 0;
    ptr_used++;
    return &ptr_slots[i];
}

/* market.decimal_text(value) where str(value) is plain: only digits, '-' and '.' (stricter than the
 * Python function's 'E'/'N'/'n' test, so every other text takes the Python function itself). "0"
 * for a zero, else str(value) with, after a '.', its trailing zeros and then the '.' stripped (the
 * str itself when nothing is). NULL without an error for any other str, NULL with one on failure. */
static PyObject *
plain_text(PyObject *value)
{
    PyObject *str = PyObject_Str(value);
    if (str == NULL || !PyUnicode_IS_ASCII(str)) {
        Py_XDECREF(str);
        return NULL;
    }
    const char *s = (const char *)PyUnicode_DATA(str);
    Py_ssize_t len = PyUnicode_GET_LENGTH(str), end = len;
    int dot = 0;
    for (Py_ssize_t k = 0; k < len; k++) {
        if (s[k] == '.') {
            dot = 1;
        }
        else if ((s[k] < '0' || s[k] > '9') && s[k] != '-') {
            Py_DECREF(str);
            return NULL;
        }
    }
    int zero = PyObject_Not(value);
    if (zero != 0) {
        Py_DECREF(str);
        return zero < 0 ? NULL : PyUnicode_FromStringAndSize("0", 1);
    }
    while (dot && end > 0 && s[end - 1] == '0') {
        end--;
    }
    if (dot && end > 0 && s[end - 1] == '.') {
        end--;
    }
    if (end == len) {
        return str;
    }
    PyObject *stripped = PyUnicode_Substring(str, 0, end);
    Py_DECREF(str);
    return stripped;
}

/* The address table's slot of `key`, NULL when it has none; the table is allocated on first use
 * (*failed set, with an error, when that fails). */
static PtrSlot *
ptr_find(PyObject *key, int *failed)
{
    *failed = 0;
    if (ptr_slots == NULL && (ptr_slots = PyMem_Calloc(PTR_SLOTS, sizeof(PtrSlot))) == NULL) {
        PyErr_NoMemory();
        *failed = 1;
        return NULL;
    }
    for (size_t i = ptr_start(key); ptr_slots[i].key != NULL; i = (i + 1) & (PTR_SLOTS - 1)) {
        if (ptr_slots[i].key == key) {
            return &ptr_slots[i];
        }
    }
    return NULL;
}

/* The row text of `value` (new reference, NULL with an error set): for an exact decimal from the
 * address table, else plain_text (or the memo route for other texts) and stored; any other object by
 * the memo route, as _rows does. */
static PyObject *
value_text(PyObject *value, PyObject *memo, PyObject *text)
{
    if (Py_TYPE(value) != (PyTypeObject *)native_decimal_type) {
        return memo_text(memo, text, value);
    }
    int failed;
    PtrSlot *slot = ptr_find(value, &failed);
    if (slot != NULL || failed) {
        return slot == NULL ? NULL : Py_NewRef(slot->text);
    }
    PyObject *found = plain_text(value);
    if (found == NULL && !PyErr_Occurred()) {
        found = memo_text(memo, text, value);
    }
    if (found != NULL) {
        ptr_store(value, found);
    }
    return found;
}

/* A row text ("-123.45", "0", "100": digits, at most one '-' first and one '.') as coefficient and
 * scale: 1, or 0 when it has another shape, more than 18 significant digits or 18 decimals. */
static int
parse_exact(PyObject *text, int64_t *coefficient, int *scale)
{
    if (!PyUnicode_IS_ASCII(text)) {
        return 0;
    }
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text), k = 0;
    int negative = len > 0 && s[0] == '-', digits = 0, point = -1;
    int64_t value = 0;
    for (k = negative; k < len; k++) {
        if (s[k] >= '0' && s[k] <= '9') {
            if ((value != 0 || s[k] != '0') && ++digits > 18) { /* leading zeros are not digits */
                return 0;
            }
            value = value * 10 + (s[k] - '0');
        }
        else if (s[k] == '.' && point < 0) {
            point = (int)k;
        }
        else {
            return 0;
        }
    }
    int decimals = point < 0 ? 0 : (int)(len - 1 - point);
    if (len == negative || point == len - 1 || decimals > 18) {
        return 0;
    }
    *coefficient = negative ? -value : value;
    *scale = decimals;
    return 1;
}

/* An exact decimal's value as coefficient / 10**scale (|coefficient| < 10**18, scale <= 18): 1
 * when its str() is plain and, without the fraction's trailing zeros, has at most 18 digits and 18
 * decimals (the scale may keep some of those zeros). Read from the object (declayout.c) when its
 * layout passed the import check and its coefficient is one word, else from its text. 0 for any
 * other object or text, -1 with an error set. */
int
native_decimal_exact(PyObject *value, int64_t *coefficient, int *scale)
{
    if (Py_TYPE(value) != (PyTypeObject *)native_decimal_type) {
        return 0;
    }
    if (native_decimal_layout) {
        int read = native_decimal_read(value, coefficient, scale);
        if (read != 2) {
            return read;
        }
    }
    return native_decimal_exact_text(value, coefficient, scale);
}

/* native_decimal_exact of an exact Decimal (the caller checked the type) through its row text,
 * parsed once and kept in the address table: the fraction's trailing zeros dropped. */
int
native_decimal_exact_text(PyObject *value, int64_t *coefficient, int *scale)
{
    int failed;
    PtrSlot *slot = ptr_find(value, &failed);
    if (failed) {
        return -1;
    }
    if (slot == NULL) {
        PyObject *text = plain_text(value);
        if (text == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        slot = ptr_store(value, text);
        Py_DECREF(text);
    }
    if (slot->exact == 0) {
        slot->exact = parse_exact(slot->text, &slot->coefficient, &slot->scale) ? 1 : 2;
    }
    *coefficient = slot->coefficient;
    *scale = slot->scale;
    return slot->exact == 1;
}

/* One side of BinanceBook.state_and_levels: (_side_sorted(book, descending), _rows(its items)) with
 * _rows' memo and text function (exact decimals through value_text's address table). NotImplemented
 * for a book or memo that is not an exact dict. */
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
    int reverse = PyObject_IsTrue(descending);
    int by_value = reverse < 0 ? -1 : native_sort_values(keys, reverse); /* distinct plain prices */
    if (by_value < 0) {
        goto error;
    }
    if (!by_value) {
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
    }
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
    /* [[get(p) or text(p), get(q) or text(q)] for p, q in side.items()], through value_text */
    rows = PyList_New(0);
    if (rows == NULL) {
        goto error;
    }
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(side);
    PyObject *key, *item;
    while (PyDict_Next(side, &pos, &key, &item)) {
        PyObject *price = Py_NewRef(key), *qty = Py_NewRef(item);
        PyObject *price_text = value_text(price, memo, text);
        PyObject *qty_text = price_text == NULL ? NULL : value_text(qty, memo, text);
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
    if (native_exact_refresh() < 0) { /* ExactSums only in the default-like decimal context */
        return NULL;
    }
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
            /* ExactSums while exact (exact.c), else the Python loop's Decimals */
            PyObject *value = PyList_GET_ITEM(cur, j), *sum;
            if (value == Py_None) {
                PyObject *notional = native_exact_notional(price, qty, NULL);
                sum = notional == NULL || native_is_exact(notional) ? notional : PyNumber_Add(zero, notional);
                if (sum != notional) {
                    Py_XDECREF(notional);
                }
            }
            else {
                sum = native_exact_add_notional(value, 1, price, qty, NULL); /* held by the list only */
            }
            if (sum == NULL) {
                failed = 1;
            }
            else if (sum == value) {
                Py_DECREF(sum);
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
