/* A plain decimal's value read from the Decimal object itself, for native_decimal_exact (sides.c);
 * part of moonstream._native, see module.c.
 *
 * CPython's _decimal keeps a libmpdec number right after the object header and the cached hash:
 * flags (sign, NaN, Infinity), exponent, digit count, word count, allocation and a pointer to the
 * coefficient's words (base 10**19 on 64-bit builds). That layout is not a public API, so it is used
 * only after a check at import: for a set of sample decimals, the values read this way must equal
 * those parsed from their str() (the address table's route, which stays the fallback). On another
 * layout the check fails and every value takes the text route, with the same results.
 *
 * Reading costs a few loads from an object the caller has just used; the text route costs a probe of
 * a 2 MB table by address (cold memory for most of a book's levels). */

#include "native.h"
#include <stdint.h>

typedef struct {
    uint8_t flags;
    int64_t exp;    /* value = (-1)**sign * coefficient * 10**exp */
    int64_t digits; /* decimal digits of the coefficient (1 for zero) */
    int64_t len;    /* words of the coefficient */
    int64_t alloc;
    uint64_t *data; /* the words, least significant first */
} MpdView;

typedef struct {
    PyObject_HEAD
    Py_hash_t hash;
    MpdView dec;
} DecimalView;

#define MPD_NEG 1
#define MPD_SPECIAL 14 /* Infinity, NaN, sNaN */
#define E18 1000000000000000000ULL

int native_decimal_layout; /* 1 once the import check passed */

/* An exact Decimal's value as native_decimal_exact gives it, read from the object: 1 with
 * *coefficient / 10**scale, 0 when its str() has an exponent or it is a NaN or an Infinity, or when
 * its value after dropping the fraction's trailing zeros has more than 18 digits or 18 decimals,
 * 2 when its coefficient has more than one word (the text route decides). The trailing zeros are
 * dropped only where the limits need it: the callers take any scale, and the same value. */
int
native_decimal_read(PyObject *value, int64_t *coefficient, int *scale)
{
    const MpdView *dec = &((const DecimalView *)value)->dec;
    int64_t exp = dec->exp;
    /* str() writes a plain number exactly when the exponent is at most 0 and the adjusted exponent
     * (that of the first digit) at least -6 */
    if ((dec->flags & MPD_SPECIAL) || exp > 0 || exp + dec->digits - 1 < -6) {
        return 0;
    }
    if (dec->len != 1) {
        return 2;
    }
    uint64_t c = dec->data[0];
    if (c < E18 && exp >= -18) { /* within the limits with or without the fraction's trailing zeros */
        *coefficient = (dec->flags & MPD_NEG) ? -(int64_t)c : (int64_t)c;
        *scale = (int)-exp;
        return 1;
    }
    while (exp < 0 && c % 10 == 0) {
        c /= 10;
        exp++;
    }
    if (c >= E18 || exp < -18) {
        return 0;
    }
    *coefficient = (dec->flags & MPD_NEG) ? -(int64_t)c : (int64_t)c;
    *scale = (int)-exp;
    return 1;
}

/* Texts whose Decimals the layout must read as the text route does: zeros in every form, signs,
 * trailing zeros, the limits of 18 digits and decimals, both sides of str()'s switch to exponents,
 * specials, and coefficients of one and of two words. */
static const char *const samples[] = {
    "0", "-0", "0.000", "0E-7", "0E+2", "1", "-1", "123.45", "-0.00120", "42000.10", "100", "1E+2",
    "1.00000000000000000000", "999999999999999999", "9999999999999999999", "-999999999999999999.0",
    "0.000001", "0.0000001", "0.0000010", "1E-7", "123456789012345678.5", "0.123456789012345678",
    "0.1234567890123456789", "0.0000012345678901234", "0.100000000000000000000", "18446744073709551615",
    "NaN", "-Infinity", "sNaN", "1234567890123456789012345", "-12345678901234567890.00", "65000.00000000",
};

/* One sample: 1 when both routes agree (the same value, at a scale of at most 18), else 0 (a
 * failure too: the check only decides which route runs, so it never fails the import). */
static int
sample_agrees(const char *text)
{
    PyObject *value = PyObject_CallFunction(native_decimal_type, "s", text);
    if (value == NULL) {
        PyErr_Clear();
        return 0;
    }
    int64_t c_read = 0, c_text = 0;
    int s_read = 0, s_text = 0;
    int read = native_decimal_read(value, &c_read, &s_read);
    int by_text = native_decimal_exact_text(value, &c_text, &s_text);
    Py_DECREF(value);
    if (by_text < 0) {
        PyErr_Clear();
        return 0;
    }
    if (read == 2) { /* more than one word: native_decimal_exact takes the text route */
        return 1;
    }
    if (read != by_text || read == 0) {
        return read == by_text;
    }
    return s_read >= 0 && s_read <= 18 && native_exact_cmp(c_read, s_read, c_text, s_text) == 0;
}

/* Check the layout (native_decimal_layout) and add DECIMAL_LAYOUT to the module: 0, or -1 with an
 * error set (only when the attribute cannot be added). */
int
native_layout_ready(PyObject *module)
{
    PyTypeObject *type = (PyTypeObject *)native_decimal_type;
    int agrees = type->tp_basicsize >= (Py_ssize_t)(sizeof(DecimalView) + sizeof(uint64_t));
    if (agrees) { /* a small coefficient lives in the object, right after the view */
        PyObject *one = PyObject_CallFunction(native_decimal_type, "s", "7");
        const DecimalView *view = (const DecimalView *)one;
        agrees = one != NULL && (const char *)view->dec.data == (const char *)one + sizeof(DecimalView) &&
                 view->dec.len == 1 && view->dec.digits == 1 && view->dec.data[0] == 7;
        Py_XDECREF(one);
        PyErr_Clear();
    }
    for (size_t k = 0; agrees && k < sizeof(samples) / sizeof(samples[0]); k++) {
        agrees = sample_agrees(samples[k]);
    }
    native_decimal_layout = agrees;
    return PyModule_AddObjectRef(module, "DECIMAL_LAYOUT", agrees ? Py_True : Py_False);
}

/* decimal_parts(value, by_layout): native_decimal_exact's (coefficient, scale) of `value`, or None,
 * through the object's layout (by_layout true; ValueError when the import check failed, None for a
 * coefficient of more than one word) or through the text route. For tests. */
PyObject *
native_decimal_parts(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decimal_parts(value, by_layout)");
        return NULL;
    }
    int by_layout = PyObject_IsTrue(args[1]);
    if (by_layout < 0) {
        return NULL;
    }
    if (by_layout && !native_decimal_layout) {
        PyErr_SetString(PyExc_ValueError, "the Decimal layout did not pass the import check");
        return NULL;
    }
    int64_t coefficient = 0;
    int scale = 0, found;
    if (Py_TYPE(args[0]) != (PyTypeObject *)native_decimal_type) {
        found = 0;
    }
    else if (by_layout) {
        found = native_decimal_read(args[0], &coefficient, &scale) == 1;
    }
    else {
        found = native_decimal_exact_text(args[0], &coefficient, &scale);
    }
    if (found < 0) {
        return NULL;
    }
    if (!found) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(Li)", (long long)coefficient, scale);
}
