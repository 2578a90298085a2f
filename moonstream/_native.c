/* Compiled inner loops of the minute job: the same operations, in the same order, as the Python
 * functions they replace, on the same Python objects (so outputs are byte-identical; see
 * moonstream/native.py and tests/unit/test_native.py).
 *
 *   cached_levels  moonstream.jobs.normalize.fields._cached_levels   (a depth message's levels)
 *   binance_event  moonstream.jobs.normalize.binance: parse_depth_update, parse_agg_trade,
 *                  parse_book_ticker and parse_trade for a well-formed message (anything else:
 *                  NotImplemented, and the Python parser names the error)
 *   normalize_run  moonstream.jobs.normalize.normalize_records' loop for the records binance_event
 *                  parses (decoding, de-duplication), up to the next other record; a depth message
 *                  in Binance's compact shape is read straight from its bytes (depth_event)
 *   set_levels     moonstream.jobs.engines.orderbook_binance.BinanceBook._set_levels
 *   binance_run    moonstream.jobs.engines.orderbook.step_orderbook's event loop while the frame
 *                  source is the Binance book: skipped events, the next diff of a synced chain
 *                  (advance, BinanceBook.on_diff, _apply, _set_levels, _record_top) and bookTickers
 *                  the book has passed (on_ticker, _compare); anything else ends the run
 *   side_state     moonstream.jobs.engines.orderbook_binance._side_state: one side's level dict and
 *                  rows for BinanceBook.state_and_levels
 *   open_side      moonstream.jobs.engines.orderbook_frames.WindowAccumulator.open_book's loop
 *                  over one side's levels
 *   parse_lines    moonstream.collector.rawfile.parse_lines: the lines of already validated tags
 *   slot_builder   moonstream.jobs.normalize.fields.positional_builder's generated ``build``
 *
 * Each returns NotImplemented, before changing anything, for an input shape the Python function
 * accepts but this file does not handle; the caller then runs the Python function. Decimal
 * arithmetic and comparisons go through the generic number and comparison protocols, so the
 * current decimal context applies exactly as in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>

/* ---- cached_levels -------------------------------------------------------------------------- */

/* `mapping[key]` for an exact dict: a borrowed value, NULL with no error on a miss, NULL with an
 * error set when hashing failed (never for the str keys of a message's fields). */
static PyObject *
lookup(PyObject *cache, PyObject *key)
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

/* A number through its cache, else through `remember` (which fills the cache or returns None).
 * Returns a new reference, Py_None (new reference) for "not a valid number", NULL on error. */
static PyObject *
cached_number(PyObject *cache, PyObject *text, PyObject *remember)
{
    PyObject *value = lookup(cache, text);
    if (value != NULL) {
        return Py_NewRef(value);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return PyObject_CallOneArg(remember, text);
}

static PyObject *
cached_levels(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
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

/* ---- binance_event -------------------------------------------------------------------------- */

/* RawRecord's and the events' attribute names, interned at import. */
static PyObject *k_recv_ns, *k_channel, *k_payload, *k_exchange, *k_collector, *k_symbol_attr;

/* Interned keys and event type names, made at import. */
static PyObject *k_stream, *k_data, *k_e, *k_s, *k_U, *k_u, *k_pu, *k_E, *k_T, *k_b, *k_a, *k_B, *k_A;
static PyObject *k_f, *k_l, *k_p, *k_q, *k_m, *k_t, *k_X, *t_depth, *t_agg, *t_ticker, *t_trade;
static PyObject *insurance_fund;

/* What binance_event needs from the Python module, built once there (BinanceContext). */
enum {
    CTX_POSITIVE, CTX_NON_NEGATIVE, CTX_REMEMBER_PRICE, CTX_REMEMBER_QTY, CTX_NS_PER_MS, CTX_EXCHANGE,
    CTX_NEW_DEPTH_UPDATE, CTX_NEW_TRADE, CTX_NEW_BOOK_TICKER, CTX_TAKER_SELL, CTX_TAKER_BUY, CTX_SIZE
};

/* fields.integer for a JSON integer: the value (borrowed) when an int >= 0, else NULL. */
static PyObject *
non_negative_int(PyObject *value)
{
    if (value == NULL || !PyLong_CheckExact(value)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030E0000
    int sign = 0;
    if (PyLong_GetSign(value, &sign) < 0) { /* public from 3.14 */
        PyErr_Clear();
        return NULL;
    }
#else
    int sign = _PyLong_Sign(value);
#endif
    return sign < 0 ? NULL : value;
}

/* fields.ms: a new reference to value * NS_PER_MS, NULL (maybe with an error) otherwise. */
static PyObject *
ms_to_ns(PyObject *value, PyObject *const *ctx)
{
    if (non_negative_int(value) == NULL) {
        return NULL;
    }
    return PyNumber_Multiply(value, ctx[CTX_NS_PER_MS]);
}

/* fields.price / fields.qty through a number cache (and its remember function on a miss): a new
 * reference to the Decimal, or NULL (maybe with an error) where the Python function would run its
 * full validation. */
static PyObject *
cached_decimal(PyObject *value, PyObject *cache, PyObject *remember)
{
    if (value == NULL || !PyUnicode_CheckExact(value)) {
        return NULL;
    }
    PyObject *number = PyDict_GetItemWithError(cache, value);
    if (number != NULL) {
        return Py_NewRef(number);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    number = PyObject_CallOneArg(remember, value);
    if (number == Py_None) {
        Py_DECREF(number);
        return NULL;
    }
    return number;
}

/* The event object of a combined-stream envelope or a bare event of type `expected` (borrowed),
 * NULL when the message is anything else (_event would raise or the parser would). */
static PyObject *
event_object(PyObject *msg, PyObject *expected)
{
    if (!PyDict_CheckExact(msg)) {
        return NULL;
    }
    PyObject *data = msg;
    if (lookup(msg, k_stream) != NULL) {
        PyObject *inner = lookup(msg, k_data);
        if (inner != NULL) {
            data = inner;
            if (!PyDict_CheckExact(data)) {
                return NULL;
            }
        }
    }
    PyObject *etype = lookup(data, k_e);
    if (etype != NULL && !(PyUnicode_CheckExact(etype) && PyUnicode_Compare(etype, expected) == 0)) {
        return NULL;
    }
    return data;
}

/* `a > b` for two ints: 1, 0, or -1 with an error set. */
static int
greater(PyObject *a, PyObject *b)
{
    return PyObject_RichCompareBool(a, b, Py_GT);
}

static PyObject *
depth_update(PyObject *data, PyObject *symbol, PyObject *recv_ns, PyObject *const *ctx)
{
    PyObject *first = non_negative_int(lookup(data, k_U));
    PyObject *last = non_negative_int(lookup(data, k_u));
    if (first == NULL || last == NULL) {
        return NULL;
    }
    int reversed = greater(first, last);
    if (reversed != 0) {
        return NULL;
    }
    PyObject *ts_ns = ms_to_ns(lookup(data, k_E), ctx);
    PyObject *tx_ns = ts_ns == NULL ? NULL : ms_to_ns(lookup(data, k_T), ctx);
    PyObject *prev = non_negative_int(lookup(data, k_pu));
    PyObject *sides[2] = {NULL, NULL};
    PyObject *keys[2] = {k_b, k_a};
    PyObject *event = NULL;
    if (tx_ns == NULL || prev == NULL) {
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        PyObject *raw = lookup(data, keys[i]);
        if (raw == NULL || !PyList_CheckExact(raw)) {
            goto done;
        }
        PyObject *args[5] = {raw, ctx[CTX_POSITIVE], ctx[CTX_NON_NEGATIVE], ctx[CTX_REMEMBER_PRICE],
                             ctx[CTX_REMEMBER_QTY]};
        sides[i] = cached_levels(NULL, args, 5);
        if (sides[i] == NULL || !PyTuple_CheckExact(sides[i])) { /* None or NotImplemented */
            goto done;
        }
    }
    PyObject *args[10] = {ctx[CTX_EXCHANGE], symbol, recv_ns, ts_ns, tx_ns, first, last, prev,
                          sides[0], sides[1]};
    event = PyObject_Vectorcall(ctx[CTX_NEW_DEPTH_UPDATE], args, 10, NULL);
done:
    Py_XDECREF(ts_ns);
    Py_XDECREF(tx_ns);
    Py_XDECREF(sides[0]);
    Py_XDECREF(sides[1]);
    return event;
}

/* Trade(...) of an aggTrade (`aggregated`: trade ids `f`..`l`, aggregate id `a`) or a trade (id `t`,
 * the insurance-fund flag from `X`), reading the fields in the Python parsers' order: a new reference,
 * or NULL (maybe with an error) for the Python parser to handle. */
static PyObject *
trade_event(PyObject *data, PyObject *symbol, PyObject *recv_ns, PyObject *const *ctx, int aggregated)
{
    PyObject *first = Py_None, *last = Py_None, *fund = Py_False;
    if (aggregated) {
        first = non_negative_int(lookup(data, k_f));
        last = non_negative_int(lookup(data, k_l));
        if (first == NULL || last == NULL || greater(first, last) != 0) {
            return NULL;
        }
    }
    else {
        /* data.get("X") == "INSURANCE_FUND", for any JSON value of X (anything else: Python compares) */
        PyObject *kind = lookup(data, k_X);
        if (kind != NULL && PyUnicode_CheckExact(kind)) {
            fund = PyUnicode_Compare(kind, insurance_fund) == 0 ? Py_True : Py_False;
        }
        else if (kind != NULL && kind != Py_None && !PyLong_CheckExact(kind) && !PyFloat_CheckExact(kind) &&
                 !PyBool_Check(kind) && !PyList_CheckExact(kind) && !PyDict_CheckExact(kind)) {
            return NULL;
        }
    }
    PyObject *ts_ns = ms_to_ns(lookup(data, k_T), ctx);
    PyObject *trade_id = non_negative_int(lookup(data, aggregated ? k_a : k_t));
    PyObject *positive = ctx[CTX_POSITIVE], *remember = ctx[CTX_REMEMBER_PRICE]; /* sizes > 0 too */
    PyObject *price = NULL, *qty = NULL, *event = NULL;
    if (ts_ns != NULL && trade_id != NULL) {
        price = cached_decimal(lookup(data, k_p), positive, remember);
    }
    if (price != NULL) {
        qty = cached_decimal(lookup(data, k_q), positive, remember);
    }
    PyObject *maker = lookup(data, k_m);
    if (qty != NULL && (maker == Py_True || maker == Py_False)) {
        PyObject *taker = maker == Py_True ? ctx[CTX_TAKER_SELL] : ctx[CTX_TAKER_BUY];
        PyObject *args[12] = {ctx[CTX_EXCHANGE], symbol, recv_ns, ts_ns, trade_id, price, qty, taker,
                              aggregated ? Py_True : Py_False, first, last, fund};
        event = PyObject_Vectorcall(ctx[CTX_NEW_TRADE], args, 12, NULL);
    }
    Py_XDECREF(ts_ns);
    Py_XDECREF(price);
    Py_XDECREF(qty);
    return event;
}

static PyObject *
book_ticker(PyObject *data, PyObject *symbol, PyObject *recv_ns, PyObject *const *ctx)
{
    PyObject *stamp = lookup(data, k_E);
    if (stamp == NULL) {
        stamp = lookup(data, k_T);
    }
    PyObject *ts_ns = ms_to_ns(stamp, ctx);
    PyObject *update_id = non_negative_int(lookup(data, k_u));
    PyObject *numbers[4] = {NULL, NULL, NULL, NULL};
    PyObject *keys[4] = {k_b, k_B, k_a, k_A};
    PyObject *event = NULL;
    if (ts_ns == NULL || update_id == NULL) {
        goto done;
    }
    for (int i = 0; i < 4; i++) {
        int is_price = i % 2 == 0;
        numbers[i] = cached_decimal(lookup(data, keys[i]), ctx[is_price ? CTX_POSITIVE : CTX_NON_NEGATIVE],
                                    ctx[is_price ? CTX_REMEMBER_PRICE : CTX_REMEMBER_QTY]);
        if (numbers[i] == NULL) {
            goto done;
        }
    }
    PyObject *args[9] = {ctx[CTX_EXCHANGE], symbol, recv_ns, ts_ns, update_id, numbers[0], numbers[1],
                         numbers[2], numbers[3]};
    event = PyObject_Vectorcall(ctx[CTX_NEW_BOOK_TICKER], args, 9, NULL);
done:
    Py_XDECREF(ts_ns);
    for (int i = 0; i < 4; i++) {
        Py_XDECREF(numbers[i]);
    }
    return event;
}

/* binance_event(kind, msg, symbol, instrument, recv_ns, context): the event the Python parser of
 * `kind` (0 depth update, 1 aggTrade, 2 bookTicker, 3 trade) returns for `msg`, or NotImplemented for
 * anything that is not a well-formed message of that kind (the Python parser then raises). */
static PyObject *
binance_event(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyTuple_CheckExact(args[5]) || PyTuple_GET_SIZE(args[5]) != CTX_SIZE) {
        PyErr_SetString(PyExc_TypeError, "binance_event(kind, msg, symbol, instrument, recv_ns, context)");
        return NULL;
    }
    long kind = PyLong_AsLong(args[0]);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *msg = args[1], *symbol = args[2], *instrument = args[3], *recv_ns = args[4];
    PyObject *const *ctx = &PyTuple_GET_ITEM(args[5], 0);
    PyObject *expected = kind == 0 ? t_depth : kind == 1 ? t_agg : kind == 2 ? t_ticker : t_trade;
    PyObject *data = event_object(msg, expected);
    PyObject *name = data == NULL ? NULL : lookup(data, k_s);
    PyObject *event = NULL;
    if (name != NULL && PyUnicode_CheckExact(name) && PyUnicode_CheckExact(instrument) &&
        PyUnicode_Compare(name, instrument) == 0) {
        Py_INCREF(data); /* the callbacks below could in theory change msg */
        event = kind == 0   ? depth_update(data, symbol, recv_ns, ctx)
                : kind == 2 ? book_ticker(data, symbol, recv_ns, ctx)
                            : trade_event(data, symbol, recv_ns, ctx, kind == 1);
        Py_DECREF(data);
    }
    if (event != NULL) {
        return event;
    }
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError) && !PyErr_ExceptionMatches(PyExc_TypeError)) {
            return NULL;
        }
        PyErr_Clear(); /* the Python parser meets the same value and names the error */
    }
    Py_RETURN_NOTIMPLEMENTED;
}

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

/* The decimal of number text `text` (new reference): from the table, else from `remember(str)`
 * (stored then). NULL without an error where remember refuses it, NULL with one on failure. */
static PyObject *
table_number(TextTable *table, const char *text, Py_ssize_t len, PyObject *remember)
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
    PyObject *number = key == NULL ? NULL : PyObject_CallOneArg(remember, key);
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
        PyObject *price = table_number(&price_texts, p_text, p_len, ctx[CTX_REMEMBER_PRICE]);
        PyObject *size =
            price == NULL ? NULL : table_number(&size_texts, q_text, q_len, ctx[CTX_REMEMBER_QTY]);
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
static PyObject *
depth_from_bytes(PyObject *payload, PyObject *symbol, PyObject *instrument, PyObject *recv_ns,
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
static PyObject *
depth_event(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_CheckExact(args[0]) || !PyTuple_CheckExact(args[4]) ||
        PyTuple_GET_SIZE(args[4]) != CTX_SIZE) {
        PyErr_SetString(PyExc_TypeError, "depth_event(payload: bytes, symbol, instrument, recv_ns, context)");
        return NULL;
    }
    PyObject *event = depth_from_bytes(args[0], args[1], args[2], args[3], &PyTuple_GET_ITEM(args[4], 0));
    if (event == NULL && !PyErr_Occurred()) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    return event;
}

/* ---- normalize_run -------------------------------------------------------------------------- */

static PyObject *k_first_update_id, *k_last_update_id, *k_update_id, *k_aggregated, *k_trade_id;
static PyObject *n_depth_update, *n_book_ticker, *n_trade;

/* events.dedup_key of an event binance_event made (kind 0: DepthUpdate, 2: BookTicker, else
 * Trade): a new tuple, or NULL with an error set. */
static PyObject *
dedup_key(long kind, PyObject *event)
{
    PyObject *name = kind == 0 ? n_depth_update : kind == 2 ? n_book_ticker : n_trade;
    PyObject *fields[2] = {NULL, NULL};
    PyObject *names[2] = {kind == 0 ? k_first_update_id : kind == 2 ? k_update_id : k_aggregated,
                          kind == 0 ? k_last_update_id : k_trade_id};
    int count = kind == 2 ? 1 : 2;
    PyObject *exchange = PyObject_GetAttr(event, k_exchange);
    PyObject *symbol = exchange == NULL ? NULL : PyObject_GetAttr(event, k_symbol_attr);
    PyObject *key = NULL;
    int ok = symbol != NULL;
    for (int i = 0; ok && i < count; i++) {
        fields[i] = PyObject_GetAttr(event, names[i]);
        ok = fields[i] != NULL;
    }
    if (ok) {
        key = count == 1 ? PyTuple_Pack(4, name, exchange, symbol, fields[0])
                         : PyTuple_Pack(5, name, exchange, symbol, fields[0], fields[1]);
    }
    Py_XDECREF(exchange);
    Py_XDECREF(symbol);
    Py_XDECREF(fields[0]);
    Py_XDECREF(fields[1]);
    return key;
}

/* One record through orjson and binance_event: a new reference to its event, NULL when the record
 * is not one of those (any error is cleared: the Python path meets it again and reports it). */
static PyObject *
fast_event(PyObject *record, PyObject *symbol, PyObject *instrument, PyObject *kinds, PyObject *loads,
           PyObject *context, long *kind_out)
{
    PyObject *exchange = PyObject_GetAttr(record, k_exchange);
    PyObject *channel = PyObject_GetAttr(record, k_channel);
    PyObject *payload = PyObject_GetAttr(record, k_payload);
    PyObject *recv_ns = PyObject_GetAttr(record, k_recv_ns);
    PyObject *event = NULL;
    PyObject *const *ctx = &PyTuple_GET_ITEM(context, 0);
    PyObject *kind = NULL;
    if (exchange != NULL && channel != NULL && payload != NULL && recv_ns != NULL &&
        PyUnicode_CheckExact(exchange) && PyUnicode_Compare(exchange, ctx[CTX_EXCHANGE]) == 0 &&
        PyUnicode_CheckExact(channel)) {
        kind = PyDict_GetItemWithError(kinds, channel);
    }
    if (kind != NULL && PyLong_CheckExact(kind) && PyLong_AsLong(kind) == 0 && PyBytes_CheckExact(payload)) {
        *kind_out = 0;
        event = depth_from_bytes(payload, symbol, instrument, recv_ns, ctx);
    }
    if (event == NULL && kind != NULL && PyLong_CheckExact(kind)) {
        PyErr_Clear();
        PyObject *msg = PyObject_CallOneArg(loads, payload);
        if (msg != NULL) {
            *kind_out = PyLong_AsLong(kind);
            PyObject *args[6] = {kind, msg, symbol, instrument, recv_ns, context};
            event = binance_event(NULL, args, 6);
            Py_DECREF(msg);
            if (event == Py_NotImplemented) {
                Py_CLEAR(event);
            }
        }
    }
    Py_XDECREF(exchange);
    Py_XDECREF(channel);
    Py_XDECREF(payload);
    Py_XDECREF(recv_ns);
    PyErr_Clear();
    return event;
}

/* normalize_run(records, start, seen, out, symbol, instrument, kinds, loads, context): from `start`
 * on, each record of the exchange in context whose channel is in `kinds`, that `loads` decodes and
 * binance_event parses, has its event appended to `out` unless its dedup key is in `seen` (then it
 * is added there). Returns (index of the first record left to the Python loop, duplicates). */
static PyObject *
normalize_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyList_CheckExact(args[0]) || !PySet_CheckExact(args[2]) ||
        !PyList_CheckExact(args[3]) || !PyDict_CheckExact(args[6]) || !PyTuple_CheckExact(args[8]) ||
        PyTuple_GET_SIZE(args[8]) != CTX_SIZE) {
        PyErr_SetString(PyExc_TypeError,
                        "normalize_run(records: list, start, seen: set, out: list, symbol, instrument, "
                        "kinds: dict, loads, context)");
        return NULL;
    }
    PyObject *records = args[0], *seen = args[2], *out = args[3];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t duplicates = 0;
    for (; i >= 0 && i < PyList_GET_SIZE(records); i++) {
        PyObject *record = Py_NewRef(PyList_GET_ITEM(records, i));
        long kind = -1;
        PyObject *event = fast_event(record, args[4], args[5], args[6], args[7], args[8], &kind);
        Py_DECREF(record);
        if (event == NULL) {
            break;
        }
        PyObject *key = dedup_key(kind, event);
        int known = key == NULL ? -1 : PySet_Contains(seen, key);
        int failed = known < 0 || (!known && (PySet_Add(seen, key) < 0 || PyList_Append(out, event) < 0));
        duplicates += known == 1;
        Py_XDECREF(key);
        Py_DECREF(event);
        if (failed) {
            return NULL;
        }
    }
    return Py_BuildValue("(nn)", i, duplicates);
}

/* ---- set_levels ----------------------------------------------------------------------------- */

/* Python's truth of `a <op> b`, as the interpreter evaluates `if a <op> b:` (no identity shortcut):
 * 1, 0, or -1 with an error set. */
static int
compare(PyObject *a, PyObject *b, int op)
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
    int truth = compare(price, item, op);
    Py_DECREF(item);
    return truth;
}

/* `tops[index] < price` (reverse: `price < tops[index]`) as bisect evaluates it, item held. */
static int
less_than_item(PyObject *price, PyObject *tops, Py_ssize_t index, int reverse)
{
    PyObject *item = Py_NewRef(PyList_GET_ITEM(tops, index));
    int less = reverse ? PyObject_RichCompareBool(price, item, Py_LT)
                       : PyObject_RichCompareBool(item, price, Py_LT);
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

/* The frame window's arrays of one side: WindowAccumulator.side_arrays */
typedef struct {
    PyObject *index, *step, *cur, *last, *acc, *index_miss;
    long long i_min, n;
    int called; /* set when index_miss (Python code) ran */
} Window;

/* price * (qty - old): a new reference, or NULL with an error set */
static PyObject *
new_notional(PyObject *price, PyObject *qty, PyObject *old)
{
    PyObject *change = PyNumber_Subtract(qty, old);
    if (change == NULL) {
        return NULL;
    }
    PyObject *notional = PyNumber_Multiply(price, change);
    Py_DECREF(change);
    return notional;
}

/* `cur[j] = price * (qty - old)` (value None) or `cur[j] = value + price * (qty - old)`, integrating
 * `float(value) * (t - since)` into acc[j] first when the bucket last changed before t. */
static int
integrate(Window *w, PyObject *price, PyObject *qty, PyObject *old, PyObject *t)
{
    PyObject *bucket = lookup(w->index, price);
    long long i;
    if (bucket != NULL) {
        i = PyLong_AsLongLong(bucket);
    }
    else {
        if (PyErr_Occurred()) {
            return -1;
        }
        w->called = 1;
        PyObject *computed = PyObject_CallFunctionObjArgs(w->index_miss, w->index, w->step, price, NULL);
        if (computed == NULL) {
            return -1;
        }
        i = PyLong_AsLongLong(computed);
        Py_DECREF(computed);
    }
    if (i == -1 && PyErr_Occurred()) {
        return -1;
    }
    long long j = i - w->i_min;
    if (j < 0 || j >= w->n) {
        return 0;
    }
    if (j >= PyList_GET_SIZE(w->cur) || j >= PyList_GET_SIZE(w->last) || j >= PyList_GET_SIZE(w->acc)) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return -1;
    }
    PyObject *value = PyList_GET_ITEM(w->cur, j);
    if (value == Py_None) {
        PyObject *notional = new_notional(price, qty, old);
        if (notional == NULL) {
            return -1;
        }
        PyList_SetItem(w->cur, j, notional); /* steals notional */
        PyList_SetItem(w->last, j, Py_NewRef(t));
        return 0;
    }
    Py_INCREF(value);
    PyObject *since = Py_NewRef(PyList_GET_ITEM(w->last, j));
    int moved = compare(since, t, Py_NE);
    int failed = moved < 0;
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
        PyObject *notional = new_notional(price, qty, old);
        PyObject *sum = notional == NULL ? NULL : PyNumber_Add(value, notional);
        Py_XDECREF(notional);
        if (sum == NULL) {
            failed = 1;
        }
        else {
            PyList_SetItem(w->cur, j, sum);
        }
    }
    Py_DECREF(since);
    Py_DECREF(value);
    return failed ? -1 : 0;
}

static int
window_from(PyObject *arrays, PyObject *index_miss, Window *w)
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
static int
apply_levels(PyObject *book, PyObject **tops_ref, PyObject *levels, PyObject *side, int bids, PyObject *t,
             Window *window, PyObject *side_tops, Py_ssize_t kept, PyObject *zero)
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
                int same = compare(old, qty, Py_EQ);
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
static int
levels_shape(PyObject *levels)
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

static PyObject *
set_levels(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
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
    if (!PyDict_CheckExact(book) || !PyList_CheckExact(tops) || !levels_shape(levels)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    Window window = {0};
    int track = 0;
    if (arrays != Py_None) {
        track = window_from(arrays, index_miss, &window);
        if (track < 0) {
            return NULL;
        }
        if (!track) {
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    Py_INCREF(tops);
    int failed = apply_levels(book, &tops, levels, side, bids, t, track ? &window : NULL, side_tops, kept, zero);
    Py_DECREF(tops);
    if (failed < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- binance_run ---------------------------------------------------------------------------- */

/* Attribute names of BinanceBook, WindowAccumulator and the Binance events, interned at import. */
static PyObject *a_status, *a_last_u, *a_last_t, *a_counts, *a_bids, *a_asks, *a_window, *a_tops,
    *a_tops_books, *a_recent, *a_pending, *a_active, *a_arrays, *a_side_tops, *a_mismatch,
    *a_prev_last_update_id, *a_ts_ns, *a_bid_price, *a_ask_price;

/* What binance_run needs from moonstream.jobs.engines.orderbook (its _RUN_CONTEXT). */
enum {
    RUN_EXCHANGE, RUN_DEPTH_UPDATE, RUN_BOOK_TICKER, RUN_DEPTH_SNAPSHOT, RUN_LEVEL_EVENTS, RUN_BOOK_TYPE,
    RUN_WINDOW_TYPE, RUN_SYNCED, RUN_STALE_NS, RUN_TOPS_KEPT, RUN_RECENT_APPLIED, RUN_ZERO, RUN_INDEX_MISS,
    RUN_DIFFS_SEEN, RUN_DIFFS_APPLIED, RUN_COMPARED, RUN_SIZE
};

/* `counts[key] += 1` as the interpreter runs it: 0, or -1 with an error set. */
static int
count_up(PyObject *counts, PyObject *key)
{
    PyObject *value = PyObject_GetItem(counts, key);
    if (value == NULL) {
        return -1;
    }
    PyObject *one = PyLong_FromLong(1);
    PyObject *sum = one == NULL ? NULL : PyNumber_InPlaceAdd(value, one);
    Py_XDECREF(one);
    Py_DECREF(value);
    if (sum == NULL) {
        return -1;
    }
    int failed = PyObject_SetItem(counts, key, sum);
    Py_DECREF(sum);
    return failed;
}

/* An exact int as a long long: 1 with *out set, 0 when not an exact int or out of range, -1 on error. */
static int
as_ll(PyObject *value, long long *out)
{
    if (value == NULL || !PyLong_CheckExact(value)) {
        return 0;
    }
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (*out == -1 && PyErr_Occurred()) {
        return -1;
    }
    return !overflow && *out > LLONG_MIN / 4 && *out < LLONG_MAX / 4;
}

/* The attributes of the BinanceBook the run reads, new references (NULL where not read), kept from
 * one event to the next while no Python code runs (nothing but this run changes them then: the run
 * updates last_u and last_t as it sets them); `arrays` the window's side arrays (NULL when it is not
 * integrating). */
typedef struct {
    int read, called;
    PyObject *status, *last_u, *last_t, *pending, *counts, *recent, *bids, *asks, *window, *tops,
        *tops_books, *arrays;
} Book;

static void
book_clear(Book *b)
{
    b->read = 0;
    b->called = 0;
    Py_CLEAR(b->status);
    Py_CLEAR(b->last_u);
    Py_CLEAR(b->last_t);
    Py_CLEAR(b->pending);
    Py_CLEAR(b->counts);
    Py_CLEAR(b->recent);
    Py_CLEAR(b->bids);
    Py_CLEAR(b->asks);
    Py_CLEAR(b->window);
    Py_CLEAR(b->tops);
    Py_CLEAR(b->tops_books);
    Py_CLEAR(b->arrays);
}

/* BinanceBook._side_tops(side) for the book's side dict `side_book`: a new reference to the best
 * prices, calling the method when it would rebuild them; NULL with an error set. */
static PyObject *
side_tops_of(PyObject *book, Book *b, int side, PyObject *side_book)
{
    PyObject *tops = PyList_GET_ITEM(b->tops, side);
    if (PyList_GET_ITEM(b->tops_books, side) != side_book ||
        (PyList_GET_SIZE(tops) == 0 && PyDict_GET_SIZE(side_book) > 0)) {
        b->called = 1;
        PyObject *number = PyLong_FromLong(side);
        PyObject *rebuilt = number == NULL ? NULL : PyObject_CallMethodOneArg(book, a_side_tops, number);
        Py_XDECREF(number);
        if (rebuilt != NULL && !PyList_CheckExact(rebuilt)) {
            PyErr_SetString(PyExc_TypeError, "_side_tops must return a list");
            Py_CLEAR(rebuilt);
        }
        return rebuilt;
    }
    return Py_NewRef(tops);
}

/* The next diff of a synced book's chain (BinanceBook.on_diff's first branch: _apply and
 * _record_top), read from `diff` and `b` (status "synced", last_u not None, pending empty, checked
 * by the caller). 1 when done, 0 when not that case or a shape this file does not handle (nothing
 * changed), -1 with an error set. */
static int
chain_diff(PyObject *book, Book *b, PyObject *diff, PyObject *t, PyObject *const *ctx)
{
    int result = 0;
    PyObject *prev = NULL, *last = NULL, *levels[2] = {NULL, NULL}, *tops = NULL, *side = NULL;
    PyObject *side_tops = NULL;
    Window windows[2] = {{0}, {0}};
    int track[2] = {0, 0};
    prev = PyObject_GetAttr(diff, a_prev_last_update_id);
    last = prev == NULL ? NULL : PyObject_GetAttr(diff, k_last_update_id);
    levels[0] = last == NULL ? NULL : PyObject_GetAttr(diff, a_bids);
    levels[1] = levels[0] == NULL ? NULL : PyObject_GetAttr(diff, a_asks);
    if (levels[1] == NULL) {
        goto error;
    }
    int next = compare(prev, b->last_u, Py_EQ);
    if (next > 0) {
        next = compare(last, b->last_u, Py_GT);
    }
    if (next <= 0) {
        result = next;
        goto done;
    }
    /* shapes first: levels, sides, best prices, window arrays (none is changed by applying a side) */
    if (!levels_shape(levels[0]) || !levels_shape(levels[1]) || !PyDict_CheckExact(b->bids) ||
        !PyDict_CheckExact(b->asks) || !PyList_CheckExact(b->recent) || !PyList_CheckExact(b->tops) ||
        PyList_GET_SIZE(b->tops) < 2 || !PyList_CheckExact(PyList_GET_ITEM(b->tops, 0)) ||
        !PyList_CheckExact(PyList_GET_ITEM(b->tops, 1)) || !PyList_CheckExact(b->tops_books) ||
        PyList_GET_SIZE(b->tops_books) < 2) {
        goto done;
    }
    if (b->arrays != NULL) {
        if (!PyTuple_CheckExact(b->arrays) || PyTuple_GET_SIZE(b->arrays) != 2) {
            goto done;
        }
        for (int k = 0; k < 2; k++) {
            track[k] = window_from(PyTuple_GET_ITEM(b->arrays, k), ctx[RUN_INDEX_MISS], &windows[k]);
        }
        if (track[0] < 0 || track[1] < 0) {
            goto error;
        }
        if (!track[0] || !track[1]) {
            goto done;
        }
    }
    Py_ssize_t kept = PyLong_AsSsize_t(ctx[RUN_TOPS_KEPT]);
    if (kept == -1 && PyErr_Occurred()) {
        goto error;
    }
    side_tops = PyObject_GetAttr(book, a_side_tops);
    if (side_tops == NULL) {
        goto error;
    }
    /* on_diff: counts["diffs_seen"] += 1; _apply: _set_levels of both sides */
    if (count_up(b->counts, ctx[RUN_DIFFS_SEEN]) < 0) {
        goto error;
    }
    for (int k = 0; k < 2; k++) {
        if (PyTuple_GET_SIZE(levels[k]) == 0) {
            continue;
        }
        PyObject *side_book = k == 0 ? b->bids : b->asks;
        tops = side_tops_of(book, b, k, side_book);
        side = tops == NULL ? NULL : PyLong_FromLong(k);
        if (side == NULL) {
            goto error;
        }
        PyObject *rebuilt_before = tops;
        int failed = apply_levels(side_book, &tops, levels[k], side, k == 0, t, track[k] ? &windows[k] : NULL,
                                  side_tops, kept, ctx[RUN_ZERO]);
        if (tops != rebuilt_before) {
            b->called = 1; /* the best prices ran out and _side_tops rebuilt them */
        }
        if (failed < 0) {
            goto error;
        }
        Py_CLEAR(tops);
        Py_CLEAR(side);
    }
    if (PyObject_SetAttr(book, a_last_u, last) < 0 || PyObject_SetAttr(book, a_last_t, t) < 0) {
        goto error;
    }
    Py_SETREF(b->last_u, Py_NewRef(last));
    Py_SETREF(b->last_t, Py_NewRef(t));
    if (count_up(b->counts, ctx[RUN_DIFFS_APPLIED]) < 0) {
        goto error;
    }
    /* _record_top(u): the best bid and ask into `recent` (pending is empty) */
    PyObject *best[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        PyObject *side_tops_list = side_tops_of(book, b, k, k == 0 ? b->bids : b->asks);
        if (side_tops_list == NULL) {
            Py_XDECREF(best[0]);
            goto error;
        }
        Py_ssize_t size = PyList_GET_SIZE(side_tops_list);
        best[k] = Py_NewRef(size == 0 ? Py_None : PyList_GET_ITEM(side_tops_list, k == 0 ? size - 1 : 0));
        Py_DECREF(side_tops_list);
    }
    PyObject *entry = PyTuple_Pack(3, last, best[0], best[1]);
    Py_DECREF(best[0]);
    Py_DECREF(best[1]);
    if (entry == NULL) {
        goto error;
    }
    int appended = PyList_Append(b->recent, entry);
    Py_DECREF(entry);
    if (appended < 0) {
        goto error;
    }
    Py_ssize_t keep = PyLong_AsSsize_t(ctx[RUN_RECENT_APPLIED]);
    if (keep == -1 && PyErr_Occurred()) {
        goto error;
    }
    if (PyList_GET_SIZE(b->recent) > keep && PyList_SetSlice(b->recent, 0, 1, NULL) < 0) {
        goto error;
    }
    result = 1;
    goto done;
error:
    result = -1;
done:
    if (windows[0].called || windows[1].called) {
        b->called = 1;
    }
    Py_XDECREF(prev);
    Py_XDECREF(last);
    Py_XDECREF(levels[0]);
    Py_XDECREF(levels[1]);
    Py_XDECREF(tops);
    Py_XDECREF(side);
    Py_XDECREF(side_tops);
    return result;
}

/* BinanceBook.on_ticker for a ticker whose update id the synced book has passed: the comparison with
 * the best prices recorded at that id (_compare; a mismatch goes on in the book's _mismatch). 1 when
 * done, 0 when not that case (nothing changed), -1 with an error set. */
static int
past_ticker(PyObject *book, Book *b, PyObject *ticker, PyObject *const *ctx)
{
    int result = 0;
    PyObject *u = PyObject_GetAttr(ticker, k_update_id), *found = NULL, *t_bid = NULL, *t_ask = NULL;
    if (u == NULL) {
        return -1;
    }
    int passed = compare(u, b->last_u, Py_LE);
    if (passed <= 0 || !PyList_CheckExact(b->recent)) {
        result = passed < 0 ? -1 : 0;
        goto done;
    }
    for (Py_ssize_t i = PyList_GET_SIZE(b->recent) - 1; i >= 0; i--) {
        PyObject *item = PyList_GET_ITEM(b->recent, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) {
            goto done; /* not an entry this file reads: the Python code runs, nothing changed */
        }
        Py_INCREF(item);
        int same = compare(PyTuple_GET_ITEM(item, 0), u, Py_EQ);
        if (same != 0) {
            if (same < 0) {
                Py_DECREF(item);
                result = -1;
                goto done;
            }
            found = item;
            break;
        }
        Py_DECREF(item);
    }
    if (found != NULL) {
        PyObject *bid = PyTuple_GET_ITEM(found, 1), *ask = PyTuple_GET_ITEM(found, 2);
        t_bid = PyObject_GetAttr(ticker, a_bid_price);
        t_ask = t_bid == NULL ? NULL : PyObject_GetAttr(ticker, a_ask_price);
        if (t_ask == NULL || count_up(b->counts, ctx[RUN_COMPARED]) < 0) {
            result = -1;
            goto done;
        }
        int equal = compare(bid, t_bid, Py_EQ);
        if (equal > 0) {
            equal = compare(ask, t_ask, Py_EQ);
        }
        if (equal < 0) {
            result = -1;
            goto done;
        }
        if (!equal) {
            b->called = 1;
            PyObject *call[6] = {book, u, bid, ask, t_bid, t_ask};
            PyObject *none = PyObject_VectorcallMethod(a_mismatch, call, 6 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                                       NULL);
            if (none == NULL) {
                result = -1;
                goto done;
            }
            Py_DECREF(none);
        }
    }
    result = 1;
done:
    Py_DECREF(u);
    Py_XDECREF(found);
    Py_XDECREF(t_bid);
    Py_XDECREF(t_ask);
    return result;
}

/* Reads (once, see Book) the book's attributes a diff or ticker needs, and the window's arrays when
 * it integrates (WindowAccumulator.side_arrays). 1 when the book is synced with a last_u and no
 * pending ticker (the fast cases), 0 otherwise (also for a window of another class), -1 on error. */
static int
read_book(PyObject *book, Book *b, PyObject *const *ctx)
{
    if (!b->read) {
        book_clear(b);
        b->read = 1;
        if ((b->status = PyObject_GetAttr(book, a_status)) == NULL ||
            (b->last_u = PyObject_GetAttr(book, a_last_u)) == NULL ||
            (b->last_t = PyObject_GetAttr(book, a_last_t)) == NULL ||
            (b->pending = PyObject_GetAttr(book, a_pending)) == NULL ||
            (b->counts = PyObject_GetAttr(book, a_counts)) == NULL ||
            (b->recent = PyObject_GetAttr(book, a_recent)) == NULL ||
            (b->bids = PyObject_GetAttr(book, a_bids)) == NULL ||
            (b->asks = PyObject_GetAttr(book, a_asks)) == NULL ||
            (b->window = PyObject_GetAttr(book, a_window)) == NULL ||
            (b->tops = PyObject_GetAttr(book, a_tops)) == NULL ||
            (b->tops_books = PyObject_GetAttr(book, a_tops_books)) == NULL) {
            book_clear(b);
            return -1;
        }
        if (b->window != Py_None) {
            if (Py_TYPE(b->window) != (PyTypeObject *)ctx[RUN_WINDOW_TYPE]) {
                book_clear(b);
                return 0;
            }
            PyObject *active = PyObject_GetAttr(b->window, a_active);
            int on = active == NULL ? -1 : PyObject_IsTrue(active);
            Py_XDECREF(active);
            if (on > 0) {
                b->arrays = PyObject_GetAttr(b->window, a_arrays);
                if (b->arrays == NULL) {
                    on = -1;
                }
                else if (b->arrays == Py_None) {
                    Py_CLEAR(b->arrays);
                }
            }
            if (on < 0) {
                book_clear(b);
                return -1;
            }
        }
    }
    int synced = compare(b->status, ctx[RUN_SYNCED], Py_EQ);
    if (synced <= 0) {
        return synced;
    }
    return b->last_u != Py_None && PyDict_CheckExact(b->pending) && PyDict_GET_SIZE(b->pending) == 0;
}

/* step_orderbook's event loop from events[k] while the frame source is the Binance book: events of
 * other symbols and kinds skipped, the next diff of a synced chain (with the clock's advance) and
 * bookTickers the book has passed handled here. Returns (k, clock) at the first event the Python loop
 * must run (or the end), or NotImplemented. */
static PyObject *
binance_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "binance_run(events, k, symbol, book, clock, end, switch_at, context)");
        return NULL;
    }
    PyObject *events = args[0], *symbol = args[2], *book = args[3], *context = args[7];
    long long clock, end, switch_at, stale_ns;
    Py_ssize_t k = PyLong_AsSsize_t(args[1]);
    if (k == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyTuple_CheckExact(context) || PyTuple_GET_SIZE(context) != RUN_SIZE ||
        (!PyList_CheckExact(events) && !PyTuple_CheckExact(events)) || k < 0 ||
        Py_TYPE(book) != (PyTypeObject *)PyTuple_GET_ITEM(context, RUN_BOOK_TYPE)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *const *ctx = &PyTuple_GET_ITEM(context, 0);
    int ok = as_ll(args[4], &clock);
    if (ok > 0) {
        ok = as_ll(args[5], &end);
    }
    if (ok > 0) {
        ok = as_ll(args[6], &switch_at);
    }
    if (ok > 0) {
        ok = as_ll(ctx[RUN_STALE_NS], &stale_ns);
    }
    if (ok <= 0) {
        if (ok < 0) {
            return NULL;
        }
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *clock_obj = Py_NewRef(args[4]);
    Py_INCREF(events);
    Book b = {0};
    for (; k < PySequence_Fast_GET_SIZE(events); k++) {
        PyObject *event = Py_NewRef(PySequence_Fast_GET_ITEM(events, k));
        int stop = 1;
        PyObject *value = PyObject_GetAttr(event, k_symbol_attr);
        int other = value == NULL ? -1 : compare(value, symbol, Py_NE);
        Py_XDECREF(value);
        if (other != 0) {
            stop = other < 0 ? -1 : 0;
            goto next;
        }
        value = PyObject_GetAttr(event, k_exchange);
        int binance = value == NULL ? -1 : compare(value, ctx[RUN_EXCHANGE], Py_EQ);
        Py_XDECREF(value);
        if (binance < 0) {
            stop = -1;
            goto next;
        }
        if (!binance) {
            int level_event = PyObject_IsInstance(event, ctx[RUN_LEVEL_EVENTS]);
            stop = level_event; /* a Bybit/OKX book event goes to the Python loop */
            goto next;
        }
        int kind = PyObject_IsInstance(event, ctx[RUN_DEPTH_UPDATE]);
        if (kind > 0) {
            /* advance(event.ts_ns), stopping where it would switch windows or stop a stale book */
            long long ts, t;
            value = PyObject_GetAttr(event, a_ts_ns);
            int known = value == NULL ? -1 : as_ll(value, &ts);
            Py_XDECREF(value);
            if (known <= 0) {
                stop = known < 0 ? -1 : 1; /* not an int this file reads: the Python code runs it */
                goto next;
            }
            t = ts > clock ? (ts < end ? ts : end) : clock;
            if (t >= switch_at) {
                goto next;
            }
            int fast = read_book(book, &b, ctx);
            if (fast <= 0) {
                stop = fast < 0 ? -1 : 1; /* not synced, or a case for the Python code */
                goto next;
            }
            long long last_t;
            known = b.last_t == Py_None ? 1 : as_ll(b.last_t, &last_t);
            if (known <= 0 || b.last_t == Py_None || t > last_t + stale_ns) {
                stop = known < 0 ? -1 : 1; /* the book went stale: Python closes the window */
                goto next;
            }
            PyObject *t_obj = t == clock ? Py_NewRef(clock_obj) : PyLong_FromLongLong(t);
            if (t_obj == NULL) {
                stop = -1;
                goto next;
            }
            int done = chain_diff(book, &b, event, t_obj, ctx);
            if (done > 0) {
                clock = t;
                Py_SETREF(clock_obj, t_obj);
                stop = 0;
            }
            else {
                Py_DECREF(t_obj);
                stop = done < 0 ? -1 : 1;
            }
            goto next;
        }
        if (kind == 0) {
            kind = PyObject_IsInstance(event, ctx[RUN_BOOK_TICKER]);
        }
        if (kind > 0) {
            int fast = read_book(book, &b, ctx);
            int done = fast <= 0 ? fast : past_ticker(book, &b, event, ctx);
            stop = done < 0 ? -1 : done == 0 ? 1 : 0; /* done 0: the Python code runs it */
            goto next;
        }
        if (kind == 0) {
            /* a snapshot goes to the Python loop; other Binance events are skipped */
            kind = PyObject_IsInstance(event, ctx[RUN_DEPTH_SNAPSHOT]);
        }
        stop = kind;
    next:
        if (b.called) { /* Python code ran: the book's attributes are read again */
            book_clear(&b);
        }
        Py_DECREF(event);
        if (stop != 0) {
            if (stop < 0) {
                book_clear(&b);
                Py_DECREF(events);
                Py_DECREF(clock_obj);
                return NULL;
            }
            break;
        }
    }
    book_clear(&b);
    Py_DECREF(events);
    PyObject *out = Py_BuildValue("(nN)", k, clock_obj);
    return out;
}

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
static PyObject *
side_state(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
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

/* The bucket of `price` on a window's grid: `index[price]`, else `index_miss(index, step, price)`,
 * minus i_min. 0 with *j set, or -1 with an error set. */
static int
bucket_of(PyObject *index, PyObject *step, PyObject *index_miss, long long i_min, PyObject *price,
          long long *j)
{
    PyObject *bucket = lookup(index, price);
    long long i;
    if (bucket != NULL) {
        i = PyLong_AsLongLong(bucket);
    }
    else {
        if (PyErr_Occurred()) {
            return -1;
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

/* WindowAccumulator.open_book's loop over one side: the new `cur` list, each bucket the sum, in the
 * dict's order, of `price * qty` of its levels (starting from `zero`), None where none. */
static PyObject *
open_side(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
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
        int failed = bucket_of(index, step, index_miss, i_min, price, &j);
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

/* ---- parse_lines --------------------------------------------------------------------------- */


/* The channel (borrowed) of an already validated tag, NULL when the tag is not in `tags`. */
static PyObject *
known_channel(PyObject *tags, const char *tag, Py_ssize_t size)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(tags, &pos, &key, &value)) {
        if (PyBytes_CheckExact(key) && PyBytes_GET_SIZE(key) == size &&
            memcmp(PyBytes_AS_STRING(key), tag, size) == 0) {
            return value;
        }
    }
    return NULL;
}

/* RawRecord(recv_ns, channel, payload, exchange, collector), built as its frozen dataclass __init__
 * does (object.__setattr__ per field). Steals recv_ns and payload. */
static PyObject *
new_record(PyTypeObject *type, PyObject *recv_ns, PyObject *channel, PyObject *payload, PyObject *exchange,
           PyObject *collector)
{
    PyObject *record = type->tp_alloc(type, 0);
    if (record == NULL || PyObject_GenericSetAttr(record, k_recv_ns, recv_ns) < 0 ||
        PyObject_GenericSetAttr(record, k_channel, channel) < 0 ||
        PyObject_GenericSetAttr(record, k_payload, payload) < 0 ||
        PyObject_GenericSetAttr(record, k_exchange, exchange) < 0 ||
        PyObject_GenericSetAttr(record, k_collector, collector) < 0) {
        Py_XDECREF(record);
        record = NULL;
    }
    Py_DECREF(recv_ns);
    Py_DECREF(payload);
    return record;
}

/* parse_lines(lines, start, tags, exchange, collector, record_type, records): appends to `records`
 * the record of each line from `start` on that rawfile.parse_lines takes on its fast path (split in
 * three at the first two spaces, a validated tag, a receive time of 1-20 ASCII digits, no CR/LF in
 * the payload), and returns the index of the first line it does not (len(lines) at the end). */
static PyObject *
parse_lines(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[2]) || !PyType_Check(args[5]) ||
        !PyList_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_lines(lines: list, start, tags: dict, exchange, collector, record_type, "
                        "records: list)");
        return NULL;
    }
    PyObject *lines = args[0], *tags = args[2], *exchange = args[3], *collector = args[4], *records = args[6];
    PyTypeObject *type = (PyTypeObject *)args[5];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    for (; i >= 0 && i < PyList_GET_SIZE(lines); i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_CheckExact(line)) {
            break;
        }
        const char *text = PyBytes_AS_STRING(line);
        Py_ssize_t size = PyBytes_GET_SIZE(line);
        const char *first = memchr(text, ' ', size);
        if (first == NULL) {
            break;
        }
        const char *tag = first + 1;
        const char *second = memchr(tag, ' ', size - (tag - text));
        if (second == NULL) {
            break;
        }
        Py_ssize_t stamp_size = first - text;
        if (stamp_size < 1 || stamp_size > 20) {
            break;
        }
        int digits = 1;
        for (Py_ssize_t k = 0; k < stamp_size; k++) {
            digits &= text[k] >= '0' && text[k] <= '9';
        }
        const char *payload = second + 1;
        Py_ssize_t payload_size = size - (payload - text);
        if (!digits || memchr(payload, '\r', payload_size) != NULL ||
            memchr(payload, '\n', payload_size) != NULL) {
            break;
        }
        PyObject *channel = known_channel(tags, tag, second - tag);
        if (channel == NULL) {
            break;
        }
        char stamp[21];
        memcpy(stamp, text, stamp_size);
        stamp[stamp_size] = '\0';
        PyObject *recv_ns = PyLong_FromString(stamp, NULL, 10);
        PyObject *body = recv_ns == NULL ? NULL : PyBytes_FromStringAndSize(payload, payload_size);
        if (body == NULL) {
            Py_XDECREF(recv_ns);
            return NULL;
        }
        PyObject *record = new_record(type, recv_ns, channel, body, exchange, collector);
        if (record == NULL || PyList_Append(records, record) < 0) {
            Py_XDECREF(record);
            return NULL;
        }
        Py_DECREF(record);
    }
    return PyLong_FromSsize_t(i);
}


/* ---- slot_builder ---------------------------------------------------------------------------- */

/* positional_builder's `build(v0, ..., vn)`: `o = object.__new__(cls)`, then each value into its slot
 * as the slot's member descriptor sets it (a new reference into an empty slot), in field order. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *cls;
    Py_ssize_t fields;
    Py_ssize_t offsets[16];
} SlotBuilder;

static PyObject *
slot_builder_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SlotBuilder *self = (SlotBuilder *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != self->fields || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_Format(PyExc_TypeError, "build_%s() takes %zd positional arguments", self->cls->tp_name,
                     self->fields);
        return NULL;
    }
    PyObject *obj = self->cls->tp_alloc(self->cls, 0);
    if (obj == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject **slot = (PyObject **)((char *)obj + self->offsets[i]);
        PyObject *old = *slot;
        *slot = Py_NewRef(args[i]);
        Py_XDECREF(old);
    }
    return obj;
}

static void
slot_builder_dealloc(PyObject *self)
{
    Py_DECREF(((SlotBuilder *)self)->cls);
    PyObject_Free(self);
}

static PyTypeObject SlotBuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "moonstream._native.SlotBuilder",
    .tp_basicsize = sizeof(SlotBuilder),
    .tp_dealloc = slot_builder_dealloc,
    .tp_vectorcall_offset = offsetof(SlotBuilder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Builds one slotted class from positional values (fields.positional_builder).",
};

/* slot_builder(cls, descriptors): the builder, or NotImplemented when `cls` or a descriptor is not
 * what it handles: a class that object.__new__ allocates plainly (no own __new__, not abstract,
 * no __dict__) and, per field in order, the writable object slot of `cls` itself. */
static PyObject *
slot_builder(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "slot_builder(cls, descriptors)");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[0];
    PyObject *descriptors = args[1];
    Py_ssize_t fields = PyTuple_GET_SIZE(descriptors);
    if (fields > 16 || cls->tp_new != PyBaseObject_Type.tp_new || cls->tp_alloc != PyType_GenericAlloc ||
        (cls->tp_flags & Py_TPFLAGS_IS_ABSTRACT) || cls->tp_dictoffset != 0 ||
        (cls->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    SlotBuilder *self = PyObject_New(SlotBuilder, &SlotBuilderType);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = slot_builder_call;
    self->cls = (PyTypeObject *)Py_NewRef(cls);
    self->fields = fields;
    for (Py_ssize_t i = 0; i < fields; i++) {
        PyObject *descriptor = PyTuple_GET_ITEM(descriptors, i);
        if (!Py_IS_TYPE(descriptor, &PyMemberDescr_Type) ||
            ((PyDescrObject *)descriptor)->d_type != cls) {
            Py_DECREF(self);
            Py_RETURN_NOTIMPLEMENTED;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            Py_DECREF(self);
            Py_RETURN_NOTIMPLEMENTED;
        }
        self->offsets[i] = member->offset;
    }
    return (PyObject *)self;
}

static PyMethodDef native_methods[] = {
    {"cached_levels", (PyCFunction)(void (*)(void))cached_levels, METH_FASTCALL,
     "A depth message's levels through the number caches (fields._cached_levels)."},
    {"binance_event", (PyCFunction)(void (*)(void))binance_event, METH_FASTCALL,
     "A well-formed Binance depth update, aggTrade, bookTicker or trade as its event, else NotImplemented."},
    {"parse_lines", (PyCFunction)(void (*)(void))parse_lines, METH_FASTCALL,
     "Records of the lines rawfile.parse_lines takes on its fast path, from `start` on."},
    {"depth_event", (PyCFunction)(void (*)(void))depth_event, METH_FASTCALL,
     "A depth message in Binance's compact shape as its DepthUpdate, straight from its bytes."},
    {"normalize_run", (PyCFunction)(void (*)(void))normalize_run, METH_FASTCALL,
     "normalize_records' loop for the records binance_event parses, up to the next other record."},
    {"set_levels", (PyCFunction)(void (*)(void))set_levels, METH_FASTCALL,
     "One side's levels into a Binance-style book (BinanceBook._set_levels)."},
    {"binance_run", (PyCFunction)(void (*)(void))binance_run, METH_FASTCALL,
     "step_orderbook's loop over the events a synced Binance book takes without the Python code."},
    {"side_state", (PyCFunction)(void (*)(void))side_state, METH_FASTCALL,
     "One side of a Binance book's state rows and level dict (BinanceBook.state_and_levels)."},
    {"open_side", (PyCFunction)(void (*)(void))open_side, METH_FASTCALL,
     "One side's bucket values at a window's open (WindowAccumulator.open_book's loop)."},
    {"slot_builder", (PyCFunction)(void (*)(void))slot_builder, METH_FASTCALL,
     "A compiled positional builder of a slotted class, else NotImplemented."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "moonstream._native", "Compiled inner loops (see moonstream/native.py).", -1,
    native_methods, NULL, NULL, NULL, NULL,
};

static int
intern_all(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&k_stream, "stream"}, {&k_data, "data"}, {&k_e, "e"}, {&k_s, "s"}, {&k_U, "U"}, {&k_u, "u"},
        {&k_pu, "pu"}, {&k_E, "E"}, {&k_T, "T"}, {&k_b, "b"}, {&k_a, "a"}, {&k_B, "B"}, {&k_A, "A"},
        {&k_f, "f"}, {&k_l, "l"}, {&k_p, "p"}, {&k_q, "q"}, {&k_m, "m"}, {&t_depth, "depthUpdate"},
        {&t_agg, "aggTrade"}, {&t_ticker, "bookTicker"}, {&t_trade, "trade"}, {&k_t, "t"}, {&k_X, "X"},
        {&insurance_fund, "INSURANCE_FUND"}, {&k_recv_ns, "recv_ns"}, {&k_channel, "channel"},
        {&k_payload, "payload"}, {&k_exchange, "exchange"}, {&k_collector, "collector"},
        {&k_symbol_attr, "symbol"}, {&k_first_update_id, "first_update_id"},
        {&k_last_update_id, "last_update_id"}, {&k_update_id, "update_id"}, {&k_aggregated, "aggregated"},
        {&k_trade_id, "trade_id"}, {&n_depth_update, "DepthUpdate"}, {&n_book_ticker, "BookTicker"},
        {&n_trade, "Trade"}, {&a_status, "status"}, {&a_last_u, "last_u"}, {&a_last_t, "last_t"},
        {&a_counts, "counts"}, {&a_bids, "bids"}, {&a_asks, "asks"}, {&a_window, "window"}, {&a_tops, "_tops"},
        {&a_tops_books, "_tops_books"}, {&a_recent, "recent"}, {&a_pending, "pending"}, {&a_active, "active"},
        {&a_arrays, "_arrays"}, {&a_side_tops, "_side_tops"}, {&a_mismatch, "_mismatch"},
        {&a_prev_last_update_id, "prev_last_update_id"}, {&a_ts_ns, "ts_ns"}, {&a_bid_price, "bid_price"},
        {&a_ask_price, "ask_price"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return -1;
        }
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__native(void)
{
    if (intern_all() < 0 || PyType_Ready(&SlotBuilderType) < 0) {
        return NULL;
    }
    return PyModule_Create(&native_module);
}
