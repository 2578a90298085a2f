/* ExactSum: a frame window's bucket value (resting USD) as an exact scaled integer, for the compiled
 * window loops (integrate in book.c, open_side in sides.c); part of moonstream._native, see module.c.
 *
 * The Python loops keep each bucket as a Decimal: `value + price * (qty - old)`, in the default
 * context (28 significant digits), read only through `float(value)`, `if value:` and further `+`.
 * While every such operation is exact, the Decimal holds the exact sum, so an integer v with
 * value = v / 10**scale holds the same number without a Decimal allocation per change:
 *
 * - a Decimal result is exact when the exact value has at most 28 significant digits; every integer
 *   here is checked to be below 10**28 (its digits are at least the value's significant digits), so
 *   each operation it stands for was exact in Decimal, and the values are equal;
 * - float(Decimal) is the correctly rounded value (float(str(value))); exact_float is too;
 * - truth is `v != 0`, as for a Decimal of that value.
 *
 * Anything else (a price or size whose text is not plain, more than 18 digits, a sum that would need
 * a 29th digit) turns the bucket back into the Decimal of its exact value, and the Decimal operations
 * go on from there: the Python loop's Decimal holds that same value (an exponent may differ, e.g.
 * 1.5 and 1.50, which changes no later result: Decimal arithmetic rounds the exact value to 28
 * significant digits whatever the operands' exponents). Python code meeting an ExactSum (`close_book`,
 * `changes`) gets the same: float(), truth, and `+` through that Decimal. */

#include "native.h"
#include <stdint.h>

/* GCC's and Clang's 128-bit integer on 64-bit targets; elsewhere this file does not compile, the
 * optional extension is not built (setup.py) and everything runs in Python. */
typedef __int128 i128;

typedef struct {
    PyObject_HEAD
    i128 v;    /* the value is v / 10**scale */
    int scale; /* 0..MAX_SCALE */
} ExactSum;

#define MAX_SCALE 36
#define DIGITS_28 ((i128)10000000000000000000ULL * (i128)1000000000ULL) /* 10**28 */

/* Whether ExactSums may stand for Decimal sums: the current decimal context rounds nothing of up to
 * 28 digits, has room for the exponents here, and traps no signal an exact result can raise (set by
 * native_exact_refresh at each entry of the window loops). One flag for the process: the minute
 * jobs' threads all run in the default context (nothing in moonstream sets another). */
static int exact_allowed;
static PyObject *getcontext, *quiet_signals; /* decimal.getcontext; Inexact, Rounded, Clamped, ... */

static i128 pow10_128[39];
static const double pow10_double[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                        1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                        1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static void
init_powers(void)
{
    if (pow10_128[0] == 0) {
        pow10_128[0] = 1;
        for (int k = 1; k < 39; k++) {
            pow10_128[k] = pow10_128[k - 1] * 10;
        }
    }
}

static i128
magnitude(i128 v)
{
    return v < 0 ? -v : v;
}

/* v * 10**(to - from) into *out (to >= from): 0 when it would not fit below 10**38. */
static int
rescale(i128 v, int from, int to, i128 *out)
{
    int k = to - from;
    if (k < 0 || k > 38 || (k > 0 && magnitude(v) >= pow10_128[38 - k])) {
        return 0;
    }
    *out = v * pow10_128[k];
    return 1;
}

/* a + b on the larger scale, into *out / *scale: 0 unless it stays below 10**28 */
static int
exact_add(i128 a, int sa, i128 b, int sb, i128 *out, int *scale)
{
    int s = sa > sb ? sa : sb;
    i128 x, y;
    if (!rescale(a, sa, s, &x) || !rescale(b, sb, s, &y) || magnitude(x) >= DIGITS_28 ||
        magnitude(y) >= DIGITS_28 || magnitude(x + y) >= DIGITS_28) {
        return 0;
    }
    *out = x + y;
    *scale = s;
    return 1;
}

/* price * (qty - old) of plain decimals (native_decimal_exact), into *out / *scale: 0 when a value
 * is not plain or a result would reach 10**28 (or MAX_SCALE), -1 with an error set. */
static int
exact_notional(PyObject *price, PyObject *qty, PyObject *old, i128 *out, int *scale)
{
    int64_t p, q, o;
    int sp, sq, so;
    if (!exact_allowed) {
        return 0;
    }
    int done = native_decimal_exact(price, &p, &sp);
    if (done > 0) {
        done = native_decimal_exact(qty, &q, &sq);
    }
    if (done > 0 && old != NULL) {
        done = native_decimal_exact(old, &o, &so);
    }
    if (done <= 0) {
        return done;
    }
    i128 change;
    int sc;
    if (old == NULL) {
        change = q;
        sc = sq;
    }
    else if (!exact_add(q, sq, -(i128)o, so, &change, &sc)) {
        return 0;
    }
    if (sp + sc > MAX_SCALE || magnitude(change) >= pow10_128[20]) { /* |p| < 10**18: no overflow */
        return 0;
    }
    i128 product = (i128)p * change;
    if (magnitude(product) >= DIGITS_28) {
        return 0;
    }
    *out = product;
    *scale = sp + sc;
    return 1;
}

static PyTypeObject ExactSumType;

static PyObject *
exact_new(i128 v, int scale)
{
    ExactSum *sum = PyObject_New(ExactSum, &ExactSumType);
    if (sum != NULL) {
        sum->v = v;
        sum->scale = scale;
    }
    return (PyObject *)sum;
}

/* The decimal digits of v (with a '-') into buf, NUL-terminated: its length. */
static int
i128_text(i128 v, char *buf)
{
    char digits[48];
    int n = 0;
    i128 m = magnitude(v);
    do {
        digits[n++] = (char)('0' + (int)(m % 10));
        m /= 10;
    } while (m != 0);
    int len = 0;
    if (v < 0) {
        buf[len++] = '-';
    }
    while (n > 0) {
        buf[len++] = digits[--n];
    }
    buf[len] = '\0';
    return len;
}

/* Decimal("<v>E-<scale>"): the exact value v / 10**scale as a Decimal (new reference). */
static PyObject *
exact_decimal_of(i128 v, int scale)
{
    char text[64];
    int len = i128_text(v, text);
    snprintf(text + len, sizeof(text) - len, "E-%d", scale);
    return PyObject_CallFunction(native_decimal_type, "s", text);
}

static PyObject *
exact_decimal(ExactSum *sum)
{
    return exact_decimal_of(sum->v, sum->scale);
}

/* float(value), correctly rounded: one IEEE division of two exact doubles when v < 2**53 and
 * 10**scale <= 10**22 are both exact, else Python's int true division (correctly rounded). */
static double
exact_float(ExactSum *sum)
{
    i128 m = magnitude(sum->v);
    if (m < ((i128)1 << 53) && sum->scale <= 22) {
        return (double)sum->v / pow10_double[sum->scale];
    }
    char text[64];
    i128_text(sum->v, text);
    PyObject *numerator = PyLong_FromString(text, NULL, 10);
    PyObject *ten = numerator == NULL ? NULL : PyLong_FromLong(10);
    PyObject *exponent = ten == NULL ? NULL : PyLong_FromLong(sum->scale);
    PyObject *denominator = exponent == NULL ? NULL : PyNumber_Power(ten, exponent, Py_None);
    PyObject *quotient = denominator == NULL ? NULL : PyNumber_TrueDivide(numerator, denominator);
    double result = quotient == NULL ? -1.0 : PyFloat_AsDouble(quotient);
    Py_XDECREF(numerator);
    Py_XDECREF(ten);
    Py_XDECREF(exponent);
    Py_XDECREF(denominator);
    Py_XDECREF(quotient);
    return result;
}

/* ---- the type: float(), truth, `+` and comparisons through the exact Decimal ------------------ */

static PyObject *
exact_nb_float(PyObject *self)
{
    double value = exact_float((ExactSum *)self);
    if (value == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    return PyFloat_FromDouble(value);
}

static int
exact_nb_bool(PyObject *self)
{
    return ((ExactSum *)self)->v != 0;
}

/* `other` as a Decimal if it is an ExactSum (new reference), else itself */
static PyObject *
as_decimal(PyObject *other)
{
    if (Py_IS_TYPE(other, &ExactSumType)) {
        return exact_decimal((ExactSum *)other);
    }
    return Py_NewRef(other);
}

static PyObject *
exact_nb_add(PyObject *a, PyObject *b)
{
    PyObject *x = as_decimal(a), *y = x == NULL ? NULL : as_decimal(b);
    PyObject *sum = y == NULL ? NULL : PyNumber_Add(x, y);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return sum;
}

static PyObject *
exact_richcompare(PyObject *a, PyObject *b, int op)
{
    PyObject *x = as_decimal(a), *y = x == NULL ? NULL : as_decimal(b);
    PyObject *result = y == NULL ? NULL : PyObject_RichCompare(x, y, op);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return result;
}

static PyObject *
exact_repr(PyObject *self)
{
    PyObject *decimal = exact_decimal((ExactSum *)self);
    if (decimal == NULL) {
        return NULL;
    }
    PyObject *repr = PyUnicode_FromFormat("ExactSum(%S)", decimal);
    Py_DECREF(decimal);
    return repr;
}

static PyObject *
exact_to_decimal(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return exact_decimal((ExactSum *)self);
}

static PyMethodDef exact_methods[] = {
    {"to_decimal", exact_to_decimal, METH_NOARGS, "The exact value as a Decimal."},
    {NULL, NULL, 0, NULL},
};

static PyNumberMethods exact_as_number = {
    .nb_add = exact_nb_add,
    .nb_bool = exact_nb_bool,
    .nb_float = exact_nb_float,
};

static PyTypeObject ExactSumType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "moonstream._native.ExactSum",
    .tp_basicsize = sizeof(ExactSum),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A frame bucket's exact value, standing for the Decimal the Python loops would hold.",
    .tp_repr = exact_repr,
    .tp_as_number = &exact_as_number,
    .tp_richcompare = exact_richcompare,
    .tp_methods = exact_methods,
    .tp_hash = PyObject_HashNotImplemented,
};

/* ---- what the window loops call ---------------------------------------------------------------- */


int
native_exact_refresh(void)
{
    exact_allowed = 0;
    PyObject *context = PyObject_CallNoArgs(getcontext);
    if (context == NULL) {
        return -1;
    }
    PyObject *prec = PyObject_GetAttrString(context, "prec");
    PyObject *emin = prec == NULL ? NULL : PyObject_GetAttrString(context, "Emin");
    PyObject *emax = emin == NULL ? NULL : PyObject_GetAttrString(context, "Emax");
    PyObject *traps = emax == NULL ? NULL : PyObject_GetAttrString(context, "traps");
    int allowed = traps != NULL && PyLong_AsLong(prec) >= 28 && PyLong_AsLong(emin) <= -80 &&
                  PyLong_AsLong(emax) >= 80;
    for (Py_ssize_t k = 0; allowed > 0 && k < PyTuple_GET_SIZE(quiet_signals); k++) {
        PyObject *trapped = PyObject_GetItem(traps, PyTuple_GET_ITEM(quiet_signals, k));
        allowed = trapped == NULL ? -1 : !PyObject_IsTrue(trapped);
        Py_XDECREF(trapped);
    }
    Py_DECREF(context);
    Py_XDECREF(prec);
    Py_XDECREF(emin);
    Py_XDECREF(emax);
    Py_XDECREF(traps);
    if (PyErr_Occurred()) {
        return -1;
    }
    exact_allowed = allowed > 0;
    return 0;
}

PyObject *native_decimal_type;

/* decimal.Decimal, decimal.getcontext and the quiet signals, read once from the module: 0, or -1
 * with an error set. */
static int
read_decimal_module(void)
{
    const char *names[7] = {"Decimal", "getcontext", "Inexact",  "Rounded",
                            "Clamped", "Subnormal",  "Underflow"};
    PyObject *found[7] = {NULL};
    PyObject *decimal = PyImport_ImportModule("decimal");
    int k = 0;
    while (decimal != NULL && k < 7 && (found[k] = PyObject_GetAttrString(decimal, names[k])) != NULL) {
        k++;
    }
    Py_XDECREF(decimal);
    if (k == 7) {
        quiet_signals = PyTuple_Pack(5, found[2], found[3], found[4], found[5], found[6]);
    }
    if (quiet_signals != NULL) {
        native_decimal_type = Py_NewRef(found[0]);
        getcontext = Py_NewRef(found[1]);
    }
    for (int i = 0; i < k; i++) {
        Py_DECREF(found[i]);
    }
    return quiet_signals == NULL ? -1 : 0;
}

int
native_exact_ready(PyObject *module)
{
    init_powers();
    if (quiet_signals == NULL && read_decimal_module() < 0) {
        return -1;
    }
    if (PyType_Ready(&ExactSumType) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "ExactSum", (PyObject *)&ExactSumType);
}

int
native_is_exact(PyObject *value)
{
    return Py_IS_TYPE(value, &ExactSumType);
}

/* float(value) of an ExactSum into *out: 0, or -1 with an error set */
int
native_exact_float(PyObject *value, double *out)
{
    *out = exact_float((ExactSum *)value);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* x / 10**sx against y / 10**sy, for |x|, |y| < 10**18 at scales 0..18 (native_decimal_exact's
 * values; rescaled below 10**36): -1, 0 or 1. */
int
native_exact_cmp(int64_t x, int sx, int64_t y, int sy)
{
    i128 left = sx < sy ? (i128)x * pow10_128[sy - sx] : x;
    i128 right = sy < sx ? (i128)y * pow10_128[sx - sy] : y;
    return (left > right) - (left < right);
}

/* `a <op> b` as `if a <op> b:` evaluates it (1, 0, or -1 with an error set): by the exact values
 * when both are plain decimals (native_decimal_exact), which is what Decimal compares, else through
 * the comparison protocol (native_compare). */
int
native_compare_values(PyObject *a, PyObject *b, int op)
{
    int64_t x, y;
    int sx, sy;
    int plain = native_decimal_exact(a, &x, &sx);
    if (plain > 0) {
        plain = native_decimal_exact(b, &y, &sy);
    }
    if (plain < 0) {
        return -1;
    }
    if (plain == 0) {
        return native_compare(a, b, op);
    }
    int order = native_exact_cmp(x, sx, y, sy);
    switch (op) {
    case Py_LT:
        return order < 0;
    case Py_LE:
        return order <= 0;
    case Py_EQ:
        return order == 0;
    case Py_NE:
        return order != 0;
    case Py_GT:
        return order > 0;
    default:
        return order >= 0;
    }
}

/* `int(price // step)` (orderbook_frames.index_miss: Decimal's integer division, truncating toward
 * zero) from the exact values of two plain decimals, without the index memo's dict (a cold entry
 * for a price new to the window): 1 with *i set, 0 when not plain (or a zero step, or a quotient
 * beyond a long long: the memo route then), -1 with an error set. */
int
native_exact_bucket(PyObject *price, PyObject *step, long long *i)
{
    int64_t p, q;
    int sp, sq;
    if (!exact_allowed) {
        return 0;
    }
    int done = native_decimal_exact(price, &p, &sp);
    if (done > 0) {
        done = native_decimal_exact(step, &q, &sq);
    }
    if (done <= 0 || q == 0) {
        return done < 0 ? -1 : 0;
    }
    /* p / 10**sp over q / 10**sq: both sides below 10**36 */
    i128 quotient = ((i128)p * pow10_128[sq]) / ((i128)q * pow10_128[sp]);
    if (quotient > LLONG_MAX / 2 || quotient < LLONG_MIN / 2) {
        return 0;
    }
    *i = (long long)quotient;
    return 1;
}

/* ---- sort_prices: a list of distinct decimals sorted by their exact values -------------------------- */

typedef struct {
    i128 key; /* the value * 10**18 */
    PyObject *item;
} Keyed;

static int
keyed_ascending(const void *a, const void *b)
{
    i128 x = ((const Keyed *)a)->key, y = ((const Keyed *)b)->key;
    return x < y ? -1 : x > y;
}

/* keyed[0..n) ascending, into out: the leading run (either direction) as it is, the rest sorted
 * apart and merged in; a book side's keys are its last sorted order plus the prices new since. */
static void
sort_keyed(Keyed *keyed, Py_ssize_t n, Keyed *out)
{
    Py_ssize_t run = 1;
    int descending = n > 1 && keyed[1].key < keyed[0].key;
    while (run < n && (descending ? keyed[run].key < keyed[run - 1].key
                                  : keyed[run].key > keyed[run - 1].key)) {
        run++;
    }
    for (Py_ssize_t a = 0, b = run - 1; descending && a < b; a++, b--) {
        Keyed swap = keyed[a];
        keyed[a] = keyed[b];
        keyed[b] = swap;
    }
    if (run < n) {
        qsort(keyed + run, (size_t)(n - run), sizeof(Keyed), keyed_ascending);
    }
    Py_ssize_t a = 0, b = run, k = 0;
    while (a < run && b < n) {
        out[k++] = keyed[b].key < keyed[a].key ? keyed[b++] : keyed[a++];
    }
    while (a < run) {
        out[k++] = keyed[a++];
    }
    while (b < n) {
        out[k++] = keyed[b++];
    }
}

/* `items.sort(reverse=reverse)` for a list of plain decimals of distinct values (a book side's
 * prices): the order Decimal comparisons give, from integer keys. 1 when sorted, 0 (the list
 * untouched) when an item is not a plain decimal or two values are equal, -1 with an error set. */
int
native_sort_values(PyObject *items, int reverse)
{
    Py_ssize_t n = PyList_GET_SIZE(items);
    Keyed *keyed = PyMem_Malloc((n > 0 ? 2 * n : 1) * sizeof(Keyed)), *sorted = keyed + n;
    if (keyed == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int done = 1;
    for (Py_ssize_t k = 0; k < n && done > 0; k++) {
        int64_t coefficient;
        int scale;
        keyed[k].item = PyList_GET_ITEM(items, k);
        done = native_decimal_exact(keyed[k].item, &coefficient, &scale);
        if (done > 0) {
            keyed[k].key = (i128)coefficient * pow10_128[18 - scale]; /* scale <= 18 digits */
        }
    }
    if (done > 0) {
        sort_keyed(keyed, n, sorted);
        for (Py_ssize_t k = 1; k < n && done > 0; k++) {
            done = sorted[k].key != sorted[k - 1].key;
        }
    }
    if (done > 0 && PyList_GET_SIZE(items) == n) {
        /* the same objects in a new order: the list's references move with them */
        for (Py_ssize_t k = 0; k < n; k++) {
            PyList_SET_ITEM(items, k, sorted[reverse ? n - 1 - k : k].item);
        }
    }
    PyMem_Free(keyed);
    return done;
}

PyObject *
native_sort_prices(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "sort_prices(items: list, reverse)");
        return NULL;
    }
    int reverse = PyObject_IsTrue(args[1]);
    if (reverse < 0) {
        return NULL;
    }
    int done = native_sort_values(args[0], reverse);
    return done < 0 ? NULL : Py_NewRef(done ? Py_True : Py_False);
}

/* The Python loop's Decimal `price * (qty - old)` (`price * qty` when `old` is NULL) */
static PyObject *
decimal_notional(PyObject *price, PyObject *qty, PyObject *old)
{
    if (old == NULL) {
        return PyNumber_Multiply(price, qty);
    }
    PyObject *change = PyNumber_Subtract(qty, old);
    PyObject *notional = change == NULL ? NULL : PyNumber_Multiply(price, change);
    Py_XDECREF(change);
    return notional;
}

/* A bucket's first change, `price * (qty - old)` (`price * qty` when `old` is NULL): a new ExactSum,
 * or the Decimal of the Python loop when not exact. New reference, NULL with an error set. */
PyObject *
native_exact_notional(PyObject *price, PyObject *qty, PyObject *old)
{
    i128 v;
    int scale;
    int done = exact_notional(price, qty, old, &v, &scale);
    if (done < 0) {
        return NULL;
    }
    return done > 0 ? exact_new(v, scale) : decimal_notional(price, qty, old);
}

/* `value + price * (qty - old)` (`price * qty` when `old` is NULL) for a bucket holding `value`
 * (Decimal or ExactSum): an ExactSum updated in place when nothing but the list and the caller (`held`
 * references) holds it, a new ExactSum, or the Decimal of the Python loop (a Decimal `value` stays
 * one). New reference, or NULL with an error set. */
PyObject *
native_exact_add_notional(PyObject *value, Py_ssize_t held, PyObject *price, PyObject *qty, PyObject *old)
{
    PyObject *notional;
    if (Py_IS_TYPE(value, &ExactSumType)) {
        ExactSum *sum = (ExactSum *)value;
        i128 v, total;
        int scale, total_scale;
        int done = exact_notional(price, qty, old, &v, &scale);
        if (done < 0) {
            return NULL;
        }
        if (done > 0 && exact_add(sum->v, sum->scale, v, scale, &total, &total_scale)) {
            if (Py_REFCNT(value) <= held) {
                sum->v = total;
                sum->scale = total_scale;
                return Py_NewRef(value);
            }
            return exact_new(total, total_scale);
        }
        notional = done > 0 ? exact_decimal_of(v, scale) : decimal_notional(price, qty, old);
    }
    else {
        notional = decimal_notional(price, qty, old);
    }
    PyObject *base = notional == NULL ? NULL : as_decimal(value);
    PyObject *total = base == NULL ? NULL : PyNumber_Add(base, notional);
    Py_XDECREF(notional);
    Py_XDECREF(base);
    return total;
}
