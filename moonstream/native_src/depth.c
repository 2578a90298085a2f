/* depth_event: a depth message in Binance's compact shape read straight from its bytes, through
 * tables of number texts (part of moonstream._native, see module.c). */

#include "native.h"
#include <stdint.h>

/* ---- depth_from_bytes ----------------------------------------------------------------------- */

/* Number texts -> validated decimals, keyed by the text's bytes, so a depth message's levels need no
 * str objects. Filled only with what the Python caches' remember functions return (the same decimal
 * for the same text), emptied when full as those caches are. 32,768 texts (3 MB) a table: a real
 * BTC recording holds ~15,000 distinct prices and as many sizes; a larger table only missed the CPU
 * caches more. */
#define TEXT_MAX 23
#define TABLE_SLOTS (1u << 16)
#define TABLE_LIMIT (1u << 15)

typedef struct {
    uint64_t hash;
    Py_ssize_t len;
    char text[TEXT_MAX + 1];
    PyObject *value;
} TextSlot;

typedef struct {
    TextSlot *slots; /* TABLE_SLOTS, allocated on first use */
    size_t used;
} TextTable;

static TextTable price_texts, size_texts;

static uint64_t
fnv1a(const char *text, Py_ssize_t len)
{
    uint64_t hash = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < len; i++) {
        hash = (hash ^ (unsigned char)text[i]) * 1099511628211ULL;
    }
    return hash;
}

static void
table_clear(TextTable *table)
{
    for (size_t i = 0; table->slots != NULL && i < TABLE_SLOTS; i++) {
        Py_CLEAR(table->slots[i].value);
    }
    table->used = 0;
}

/* The decimal of number text `text` (new reference): from the table, else from
 * native_remember(str, cache, remember) (stored then). NULL without an error where remember refuses
 * it, NULL with one on failure. */
static PyObject *
table_number(TextTable *table, const char *text, Py_ssize_t len, PyObject *cache, PyObject *remember,
             int positive, PyObject *const *ctx)
{
    if (table->slots == NULL) {
        table->slots = PyMem_Calloc(TABLE_SLOTS, sizeof(TextSlot));
        if (table->slots == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    uint64_t hash = fnv1a(text, len);
    size_t i = (size_t)hash & (TABLE_SLOTS - 1);
    if (len <= TEXT_MAX) {
        for (TextSlot *slot = &table->slots[i]; slot->value != NULL; slot = &table->slots[i]) {
            if (slot->hash == hash && slot->len == len && memcmp(slot->text, text, len) == 0) {
                return Py_NewRef(slot->value);
            }
            i = (i + 1) & (TABLE_SLOTS - 1);
        }
    }
    PyObject *key = PyUnicode_DecodeASCII(text, len, NULL);
    PyObject *number = key == NULL ? NULL : native_remember(key, cache, remember, positive, ctx);
    Py_XDECREF(key);
    if (number == NULL || number == Py_None) {
        Py_XDECREF(number);
        return NULL;
    }
    if (len <= TEXT_MAX) {
        if (table->used >= TABLE_LIMIT) {
            table_clear(table);
            i = (size_t)hash & (TABLE_SLOTS - 1);
        }
        while (table->slots[i].value != NULL) { /* the slot the probe above ended on, or after a clear */
            i = (i + 1) & (TABLE_SLOTS - 1);
        }
        TextSlot *slot = &table->slots[i];
        slot->hash = hash;
        slot->len = len;
        memcpy(slot->text, text, len);
        slot->value = Py_NewRef(number);
        table->used++;
    }
    return number;
}

/* A strict reader of one JSON text shape: `at` moves over what matched; 0 when it does not. */
typedef struct {
    const char *at, *end;
} Reader;

static int
literal(Reader *r, const char *text)
{
    size_t len = strlen(text);
    if ((size_t)(r->end - r->at) < len || memcmp(r->at, text, len) != 0) {
        return 0;
    }
    r->at += len;
    return 1;
}

/* The body of a string whose opening quote was read: printable ASCII, no escapes, up to its quote. */
static int
string_body(Reader *r, const char **start, Py_ssize_t *len)
{
    const char *p = r->at;
    while (p < r->end && *p != '"') {
        if (*p < 0x20 || *p > 0x7e || *p == '\\') {
            return 0;
        }
        p++;
    }
    if (p == r->end) {
        return 0;
    }
    *start = r->at;
    *len = p - r->at;
    r->at = p + 1;
    return 1;
}

/* A JSON integer >= 0 of at most 18 digits (no sign, fraction, exponent or leading zero). */
static int
small_uint(Reader *r, long long *value)
{
    const char *p = r->at;
    long long v = 0;
    while (p < r->end && *p >= '0' && *p <= '9' && p - r->at < 19) {
        v = v * 10 + (*p - '0');
        p++;
    }
    Py_ssize_t digits = p - r->at;
    if (digits == 0 || digits > 18 || (digits > 1 && *r->at == '0')) {
        return 0;
    }
    r->at = p;
    *value = v;
    return 1;
}

/* `str` (an exact, one-byte-per-character str) holds exactly these bytes. */
static int
same_ascii(PyObject *str, const char *text, Py_ssize_t len)
{
    return PyUnicode_CheckExact(str) && PyUnicode_KIND(str) == PyUnicode_1BYTE_KIND &&
           PyUnicode_GET_LENGTH(str) == len && memcmp(PyUnicode_DATA(str), text, len) == 0;
}

/* `[["price","size"],...]` through the text tables: a new tuple of (Decimal, Decimal) tuples, or NULL
 * (with an error only on failure). */
static PyObject *
level_list(Reader *r, PyObject *const *ctx)
{
    if (!literal(r, "[")) {
        return NULL;
    }
    PyObject *levels = PyList_New(0);
    if (levels == NULL || literal(r, "]")) {
        goto done;
    }
    do {
        const char *p_text, *q_text;
        Py_ssize_t p_len, q_len;
        if (!literal(r, "[\"") || !string_body(r, &p_text, &p_len) || !literal(r, ",\"") ||
            !string_body(r, &q_text, &q_len) || !literal(r, "]")) {
            Py_CLEAR(levels);
            goto done;
        }
        PyObject *price =
            table_number(&price_texts, p_text, p_len, ctx[CTX_POSITIVE], ctx[CTX_REMEMBER_PRICE], 1, ctx);
        PyObject *size =
            price == NULL
                ? NULL
                : table_number(&size_texts, q_text, q_len, ctx[CTX_NON_NEGATIVE], ctx[CTX_REMEMBER_QTY], 0, ctx);
        PyObject *level = size == NULL ? NULL : PyTuple_Pack(2, price, size);
        Py_XDECREF(price);
        Py_XDECREF(size);
        if (level == NULL || PyList_Append(levels, level) < 0) {
            Py_XDECREF(level);
            Py_CLEAR(levels);
            goto done;
        }
        Py_DECREF(level);
    } while (literal(r, ","));
    if (!literal(r, "]")) {
        Py_CLEAR(levels);
    }
done:
    if (levels == NULL) {
        return NULL;
    }
    PyObject *tuple = PyList_AsTuple(levels);
    Py_DECREF(levels);
    return tuple;
}

/* The DepthUpdate of a depth message in exactly Binance's compact shape, straight from its bytes:
 * {"stream":"...","data":{"e":"depthUpdate","E":..,"T":..,"s":"..","U":..,"u":..,"pu":..,"b":[..],
 * "a":[..]}} (or the bare event object). Every such text is valid JSON that orjson and binance_event
 * turn into the same event; anything else gives NULL (with an error only on failure) and takes the
 * general path. */
PyObject *
native_depth_from_bytes(PyObject *payload, PyObject *symbol, PyObject *instrument, PyObject *recv_ns,
                        PyObject *const *ctx)
{
    Reader r = {PyBytes_AS_STRING(payload), PyBytes_AS_STRING(payload) + PyBytes_GET_SIZE(payload)};
    const char *text;
    Py_ssize_t len;
    int envelope = literal(&r, "{\"stream\":\"");
    if (envelope && (!string_body(&r, &text, &len) || !literal(&r, ",\"data\":"))) {
        return NULL;
    }
    long long event_ms, trade_ms, first, last, prev;
    if (!literal(&r, "{\"e\":\"depthUpdate\",\"E\":") || !small_uint(&r, &event_ms) ||
        !literal(&r, ",\"T\":") || !small_uint(&r, &trade_ms) || !literal(&r, ",\"s\":\"") ||
        !string_body(&r, &text, &len) || !same_ascii(instrument, text, len) || !literal(&r, ",\"U\":") ||
        !small_uint(&r, &first) || !literal(&r, ",\"u\":") || !small_uint(&r, &last) ||
        !literal(&r, ",\"pu\":") || !small_uint(&r, &prev) || first > last || !literal(&r, ",\"b\":")) {
        return NULL;
    }
    long long ns_per_ms = PyLong_AsLongLong(ctx[CTX_NS_PER_MS]);
    if (ns_per_ms <= 0 || event_ms > LLONG_MAX / ns_per_ms || trade_ms > LLONG_MAX / ns_per_ms) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *bids = level_list(&r, ctx);
    PyObject *asks = bids == NULL || !literal(&r, ",\"a\":") ? NULL : level_list(&r, ctx);
    PyObject *event = NULL;
    if (asks != NULL && literal(&r, envelope ? "}}" : "}") && r.at == r.end) {
        PyObject *values[5] = {PyLong_FromLongLong(event_ms * ns_per_ms),
                               PyLong_FromLongLong(trade_ms * ns_per_ms), PyLong_FromLongLong(first),
                               PyLong_FromLongLong(last), PyLong_FromLongLong(prev)};
        if (values[0] && values[1] && values[2] && values[3] && values[4]) {
            PyObject *args[10] = {ctx[CTX_EXCHANGE], symbol,    recv_ns,   values[0], values[1],
                                  values[2],         values[3], values[4], bids,      asks};
            event = PyObject_Vectorcall(ctx[CTX_NEW_DEPTH_UPDATE], args, 10, NULL);
        }
        for (int i = 0; i < 5; i++) {
            Py_XDECREF(values[i]);
        }
    }
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return event;
}

/* depth_event(payload, symbol, instrument, recv_ns, context): depth_from_bytes as a function (for
 * tests): the event, or NotImplemented where the general path (orjson, binance_event) must decide. */
PyObject *
native_depth_event(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_CheckExact(args[0]) || !PyTuple_CheckExact(args[4]) ||
        PyTuple_GET_SIZE(args[4]) != CTX_SIZE) {
        PyErr_SetString(PyExc_TypeError, "depth_event(payload: bytes, symbol, instrument, recv_ns, context)");
        return NULL;
    }
    PyObject *event = native_depth_from_bytes(args[0], args[1], args[2], args[3], &PyTuple_GET_ITEM(args[4], 0));
    if (event == NULL && !PyErr_Occurred()) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    return event;
}
