/* moonstream._native: compiled inner loops of the minute job, one extension module built from the C
 * files of this folder (moonstream/native_src/, sharing native.h). The same operations, in the same
 * order, as the Python functions they replace, on the same Python objects (so outputs are
 * byte-identical; see moonstream/native.py and tests/unit/test_native.py).
 *
 *   cached_levels  levels.c   moonstream.jobs.normalize.fields._cached_levels   (a depth message's
 *                             levels)
 *   binance_event  binance.c  moonstream.jobs.normalize.binance: parse_depth_update, parse_agg_trade,
 *                             parse_book_ticker, parse_trade and parse_mark_price for a well-formed
 *                             message (anything else: NotImplemented, and the Python parser names the
 *                             error)
 *   normalize_run  binance.c  moonstream.jobs.normalize.normalize_records' loop for the records
 *                             binance_event parses (decoding, de-duplication), up to the next other
 *                             record; a depth message in Binance's compact shape is read straight from
 *                             its bytes (depth_event, depth.c)
 *   set_levels     book.c     moonstream.jobs.engines.orderbook_binance.BinanceBook._set_levels
 *   binance_run    run.c      moonstream.jobs.engines.orderbook.step_orderbook's event loop while the
 *                             frame source is the Binance book: skipped events, the next diff of a
 *                             synced chain (advance, BinanceBook.on_diff, _apply, _set_levels,
 *                             _record_top) and bookTickers the book has passed (on_ticker, _compare);
 *                             anything else ends the run
 *   side_state     sides.c    moonstream.jobs.engines.orderbook_binance._side_state: one side's level
 *                             dict and rows for BinanceBook.state_and_levels
 *   open_side      sides.c    moonstream.jobs.engines.orderbook_frames.WindowAccumulator.open_book's
 *                             loop over one side's levels
 *   sort_prices    exact.c    `list.sort()` of a book side's prices, by exact integer keys
 *   ExactSum       exact.c    the window loops' bucket sums (set_levels, binance_run, open_side) as exact
 *                             integers while the Decimal sums would be exact, standing for them
 *   decimal_parts  declayout.c  a plain Decimal's integer value, read from the object where its layout
 *                             passed the import check (DECIMAL_LAYOUT), else from its text; for tests
 *   parse_lines    lines.c    moonstream.collector.rawfile.parse_lines: the lines of already validated
 *                             tags
 *   slot_builder   builder.c  moonstream.jobs.normalize.fields.positional_builder's generated ``build``
 *
 * This file: the method table, the module and the interned names the others share.
 *
 * Each returns NotImplemented, before changing anything, for an input shape the Python function
 * accepts but these files do not handle; the caller then runs the Python function. Decimal
 * arithmetic and comparisons go through the generic number and comparison protocols, so the
 * current decimal context applies exactly as in Python.
 */
#include "native.h"

/* ---- interned names (declared in native.h) ----------------------------------------------------- */

/* RawRecord's and the events' attribute names, interned at import. */
PyObject *k_recv_ns, *k_channel, *k_payload, *k_exchange, *k_collector, *k_symbol_attr;

/* Interned keys and event type names, made at import. */
PyObject *k_stream, *k_data, *k_e, *k_s, *k_U, *k_u, *k_pu, *k_E, *k_T, *k_b, *k_a, *k_B, *k_A;
PyObject *k_f, *k_l, *k_p, *k_q, *k_m, *k_t, *k_X, *k_i, *k_r, *t_depth, *t_agg, *t_ticker, *t_trade, *t_mark;
PyObject *insurance_fund;

/* normalize_run's (and binance_run's) field and class names. */
PyObject *k_first_update_id, *k_last_update_id, *k_update_id, *k_aggregated, *k_trade_id;
PyObject *n_depth_update, *n_book_ticker, *n_trade, *n_mark_price;

/* Attribute names of BinanceBook, WindowAccumulator and the Binance events, interned at import. */
PyObject *a_status, *a_last_u, *a_last_t, *a_counts, *a_bids, *a_asks, *a_window, *a_tops, *a_tops_books,
    *a_recent, *a_pending, *a_active, *a_arrays, *a_side_tops, *a_mismatch, *a_prev_last_update_id, *a_ts_ns,
    *a_bid_price, *a_ask_price;

/* ---- the module -------------------------------------------------------------------------------- */

static PyMethodDef native_methods[] = {
    {"cached_levels", (PyCFunction)(void (*)(void))native_cached_levels, METH_FASTCALL,
     "A depth message's levels through the number caches (fields._cached_levels)."},
    {"binance_event", (PyCFunction)(void (*)(void))native_binance_event, METH_FASTCALL,
     "A well-formed Binance depth update, aggTrade, bookTicker, trade or markPrice as its event, else "
     "NotImplemented."},
    {"parse_lines", (PyCFunction)(void (*)(void))native_parse_lines, METH_FASTCALL,
     "Records of the lines rawfile.parse_lines takes on its fast path, from `start` on."},
    {"depth_event", (PyCFunction)(void (*)(void))native_depth_event, METH_FASTCALL,
     "A depth message in Binance's compact shape as its DepthUpdate, straight from its bytes."},
    {"normalize_run", (PyCFunction)(void (*)(void))native_normalize_run, METH_FASTCALL,
     "normalize_records' loop for the records binance_event parses, up to the next other record."},
    {"set_levels", (PyCFunction)(void (*)(void))native_set_levels, METH_FASTCALL,
     "One side's levels into a Binance-style book (BinanceBook._set_levels)."},
    {"binance_run", (PyCFunction)(void (*)(void))native_binance_run, METH_FASTCALL,
     "step_orderbook's loop over the events a synced Binance book takes without the Python code."},
    {"side_state", (PyCFunction)(void (*)(void))native_side_state, METH_FASTCALL,
     "One side of a Binance book's state rows and level dict (BinanceBook.state_and_levels)."},
    {"open_side", (PyCFunction)(void (*)(void))native_open_side, METH_FASTCALL,
     "One side's bucket values at a window's open (WindowAccumulator.open_book's loop)."},
    {"sort_prices", (PyCFunction)(void (*)(void))native_sort_prices, METH_FASTCALL,
     "Sort a list of distinct plain decimals by value; False (untouched) for any other list."},
    {"decimal_parts", (PyCFunction)(void (*)(void))native_decimal_parts, METH_FASTCALL,
     "A plain decimal as (coefficient, scale), by its object's layout or by its text; for tests."},
    {"slot_builder", (PyCFunction)(void (*)(void))native_slot_builder, METH_FASTCALL,
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
        {&k_i, "i"}, {&k_r, "r"}, {&t_mark, "markPriceUpdate"}, {&n_mark_price, "MarkPrice"},
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
    PyObject *module = PyModule_Create(&native_module);
    if (module != NULL && (native_exact_ready(module) < 0 || native_layout_ready(module) < 0)) {
        Py_CLEAR(module);
    }
    return module;
}
