/* binance_event and normalize_run: the Binance message parsers and normalize_records' loop over
 * them (part of moonstream._native, see module.c). */

#include "native.h"

/* ---- binance_event -------------------------------------------------------------------------- */

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

/* The number caches of ctx: prices and other numbers > 0, sizes >= 0, finite numbers of any sign. */
typedef enum { POSITIVE, NON_NEGATIVE, FINITE } NumberKind;

/* fields.price / fields.qty / fields.finite through the number cache of `kind` (and its remember
 * function on a miss): a new reference to the Decimal, or NULL (maybe with an error) where the Python
 * function would run its full validation. */
static PyObject *
cached_decimal(PyObject *value, NumberKind kind, PyObject *const *ctx)
{
    if (value == NULL || !PyUnicode_CheckExact(value)) {
        return NULL;
    }
    static const int caches[] = {CTX_POSITIVE, CTX_NON_NEGATIVE, CTX_FINITE};
    static const int remembers[] = {CTX_REMEMBER_PRICE, CTX_REMEMBER_QTY, CTX_REMEMBER_FINITE};
    PyObject *cache = ctx[caches[kind]], *remember = ctx[remembers[kind]];
    PyObject *number = PyDict_GetItemWithError(cache, value);
    if (number != NULL) {
        return Py_NewRef(number);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    number = native_remember(value, cache, remember, kind == POSITIVE, ctx);
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
    if (native_lookup(msg, k_stream) != NULL) {
        PyObject *inner = native_lookup(msg, k_data);
        if (inner != NULL) {
            data = inner;
            if (!PyDict_CheckExact(data)) {
                return NULL;
            }
        }
    }
    PyObject *etype = native_lookup(data, k_e);
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
    PyObject *first = non_negative_int(native_lookup(data, k_U));
    PyObject *last = non_negative_int(native_lookup(data, k_u));
    if (first == NULL || last == NULL) {
        return NULL;
    }
    int reversed = greater(first, last);
    if (reversed != 0) {
        return NULL;
    }
    PyObject *ts_ns = ms_to_ns(native_lookup(data, k_E), ctx);
    PyObject *tx_ns = ts_ns == NULL ? NULL : ms_to_ns(native_lookup(data, k_T), ctx);
    PyObject *prev = non_negative_int(native_lookup(data, k_pu));
    PyObject *sides[2] = {NULL, NULL};
    PyObject *keys[2] = {k_b, k_a};
    PyObject *event = NULL;
    if (tx_ns == NULL || prev == NULL) {
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        PyObject *raw = native_lookup(data, keys[i]);
        if (raw == NULL || !PyList_CheckExact(raw)) {
            goto done;
        }
        PyObject *args[5] = {raw, ctx[CTX_POSITIVE], ctx[CTX_NON_NEGATIVE], ctx[CTX_REMEMBER_PRICE],
                             ctx[CTX_REMEMBER_QTY]};
        sides[i] = native_cached_levels(NULL, args, 5);
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
        first = non_negative_int(native_lookup(data, k_f));
        last = non_negative_int(native_lookup(data, k_l));
        if (first == NULL || last == NULL || greater(first, last) != 0) {
            return NULL;
        }
    }
    else {
        /* data.get("X") == "INSURANCE_FUND", for any JSON value of X (anything else: Python compares) */
        PyObject *kind = native_lookup(data, k_X);
        if (kind != NULL && PyUnicode_CheckExact(kind)) {
            fund = PyUnicode_Compare(kind, insurance_fund) == 0 ? Py_True : Py_False;
        }
        else if (kind != NULL && kind != Py_None && !PyLong_CheckExact(kind) && !PyFloat_CheckExact(kind) &&
                 !PyBool_Check(kind) && !PyList_CheckExact(kind) && !PyDict_CheckExact(kind)) {
            return NULL;
        }
    }
    PyObject *ts_ns = ms_to_ns(native_lookup(data, k_T), ctx);
    PyObject *trade_id = non_negative_int(native_lookup(data, aggregated ? k_a : k_t));
    PyObject *price = NULL, *qty = NULL, *event = NULL;
    if (ts_ns != NULL && trade_id != NULL) {
        price = cached_decimal(native_lookup(data, k_p), POSITIVE, ctx);
    }
    if (price != NULL) {
        qty = cached_decimal(native_lookup(data, k_q), POSITIVE, ctx); /* sizes > 0 too */
    }
    PyObject *maker = native_lookup(data, k_m);
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
    PyObject *stamp = native_lookup(data, k_E);
    if (stamp == NULL) {
        stamp = native_lookup(data, k_T);
    }
    PyObject *ts_ns = ms_to_ns(stamp, ctx);
    PyObject *update_id = non_negative_int(native_lookup(data, k_u));
    PyObject *numbers[4] = {NULL, NULL, NULL, NULL};
    PyObject *keys[4] = {k_b, k_B, k_a, k_A};
    PyObject *event = NULL;
    if (ts_ns == NULL || update_id == NULL) {
        goto done;
    }
    for (int i = 0; i < 4; i++) {
        int is_price = i % 2 == 0;
        numbers[i] = cached_decimal(native_lookup(data, keys[i]), is_price ? POSITIVE : NON_NEGATIVE, ctx);
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

/* MarkPrice(...) of a markPriceUpdate, reading the fields in parse_mark_price's order: the funding
 * rate `r` may be negative (fields.finite: any finite number, its Decimal from a cache of its own). A
 * new reference, or NULL (maybe with an error) for the Python parser to handle. */
static PyObject *
mark_price(PyObject *data, PyObject *symbol, PyObject *recv_ns, PyObject *const *ctx)
{
    PyObject *ts_ns = ms_to_ns(native_lookup(data, k_E), ctx);
    PyObject *numbers[3] = {NULL, NULL, NULL};
    PyObject *keys[3] = {k_p, k_i, k_r};
    PyObject *funding_ns = NULL, *event = NULL;
    if (ts_ns == NULL) {
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        int is_price = i < 2;
        numbers[i] = cached_decimal(native_lookup(data, keys[i]), is_price ? POSITIVE : FINITE, ctx);
        if (numbers[i] == NULL) {
            goto done;
        }
    }
    funding_ns = ms_to_ns(native_lookup(data, k_T), ctx);
    if (funding_ns != NULL) {
        PyObject *args[8] = {ctx[CTX_EXCHANGE], symbol,     recv_ns,    ts_ns,
                             numbers[0],        numbers[1], numbers[2], funding_ns};
        event = PyObject_Vectorcall(ctx[CTX_NEW_MARK_PRICE], args, 8, NULL);
    }
done:
    Py_XDECREF(ts_ns);
    Py_XDECREF(funding_ns);
    for (int i = 0; i < 3; i++) {
        Py_XDECREF(numbers[i]);
    }
    return event;
}

/* binance_event(kind, msg, symbol, instrument, recv_ns, context): the event the Python parser of
 * `kind` (0 depth update, 1 aggTrade, 2 bookTicker, 3 trade, 4 markPrice) returns for `msg`, or
 * NotImplemented for anything that is not a well-formed message of that kind (the Python parser then
 * raises). */
PyObject *
native_binance_event(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
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
    PyObject *expected = kind == 0   ? t_depth
                         : kind == 1 ? t_agg
                         : kind == 2 ? t_ticker
                         : kind == 4 ? t_mark
                                     : t_trade;
    PyObject *data = event_object(msg, expected);
    PyObject *name = data == NULL ? NULL : native_lookup(data, k_s);
    PyObject *event = NULL;
    if (name != NULL && PyUnicode_CheckExact(name) && PyUnicode_CheckExact(instrument) &&
        PyUnicode_Compare(name, instrument) == 0) {
        Py_INCREF(data); /* the callbacks below could in theory change msg */
        event = kind == 0   ? depth_update(data, symbol, recv_ns, ctx)
                : kind == 2 ? book_ticker(data, symbol, recv_ns, ctx)
                : kind == 4 ? mark_price(data, symbol, recv_ns, ctx)
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

/* ---- normalize_run -------------------------------------------------------------------------- */

/* events.dedup_key of an event binance_event made (kind 0: DepthUpdate, 2: BookTicker, 4: MarkPrice,
 * else Trade): a new tuple, or NULL with an error set. */
static PyObject *
dedup_key(long kind, PyObject *event)
{
    PyObject *name = kind == 0 ? n_depth_update : kind == 2 ? n_book_ticker : kind == 4 ? n_mark_price : n_trade;
    PyObject *fields[2] = {NULL, NULL};
    PyObject *names[2] = {kind == 0   ? k_first_update_id
                          : kind == 2 ? k_update_id
                          : kind == 4 ? a_ts_ns
                                      : k_aggregated,
                          kind == 0 ? k_last_update_id : k_trade_id};
    int count = kind == 2 || kind == 4 ? 1 : 2;
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
        event = native_depth_from_bytes(payload, symbol, instrument, recv_ns, ctx);
    }
    if (event == NULL && kind != NULL && PyLong_CheckExact(kind)) {
        PyErr_Clear();
        PyObject *msg = PyObject_CallOneArg(loads, payload);
        if (msg != NULL) {
            *kind_out = PyLong_AsLong(kind);
            PyObject *args[6] = {kind, msg, symbol, instrument, recv_ns, context};
            event = native_binance_event(NULL, args, 6);
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
PyObject *
native_normalize_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
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
