/* moonstream._native's internal header: what its source files (the C files of moonstream/native_src/,
 * one extension module; module.c says which file mirrors which Python function) share. Everything
 * else stays static in its file. The shared symbols are hidden: the module still exports only
 * PyInit__native. */
#ifndef MOONSTREAM_NATIVE_H
#define MOONSTREAM_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(_WIN32) && !defined(__CYGWIN__)
#define NATIVE_INTERNAL __attribute__((visibility("hidden")))
#else
#define NATIVE_INTERNAL
#endif

/* ---- interned names (module.c, made at import) ------------------------------------------------ */

/* RawRecord's and the events' attribute names. */
extern NATIVE_INTERNAL PyObject *k_recv_ns, *k_channel, *k_payload, *k_exchange, *k_collector, *k_symbol_attr;

/* Keys and event type names of Binance's messages. */
extern NATIVE_INTERNAL PyObject *k_stream, *k_data, *k_e, *k_s, *k_U, *k_u, *k_pu, *k_E, *k_T, *k_b, *k_a,
    *k_B, *k_A;
extern NATIVE_INTERNAL PyObject *k_f, *k_l, *k_p, *k_q, *k_m, *k_t, *k_X, *k_i, *k_r, *t_depth, *t_agg,
    *t_ticker, *t_trade, *t_mark;
extern NATIVE_INTERNAL PyObject *insurance_fund;

/* The events' field and class names that normalize_run and binance_run read. */
extern NATIVE_INTERNAL PyObject *k_first_update_id, *k_last_update_id, *k_update_id, *k_aggregated,
    *k_trade_id;
extern NATIVE_INTERNAL PyObject *n_depth_update, *n_book_ticker, *n_trade, *n_mark_price;

/* Attribute names of BinanceBook, WindowAccumulator and the Binance events. */
extern NATIVE_INTERNAL PyObject *a_status, *a_last_u, *a_last_t, *a_counts, *a_bids, *a_asks, *a_window,
    *a_tops, *a_tops_books, *a_recent, *a_pending, *a_active, *a_arrays, *a_side_tops, *a_mismatch,
    *a_prev_last_update_id, *a_ts_ns, *a_bid_price, *a_ask_price;

/* decimal.Decimal (exact.c, read at import) */
extern NATIVE_INTERNAL PyObject *native_decimal_type;

/* ---- shared types ------------------------------------------------------------------------------ */

/* What binance_event needs from the Python module, built once there (binance._FAST_CONTEXT). */
enum {
    CTX_POSITIVE, CTX_NON_NEGATIVE, CTX_REMEMBER_PRICE, CTX_REMEMBER_QTY, CTX_NS_PER_MS, CTX_EXCHANGE,
    CTX_NEW_DEPTH_UPDATE, CTX_NEW_TRADE, CTX_NEW_BOOK_TICKER, CTX_TAKER_SELL, CTX_TAKER_BUY,
    CTX_NEW_MARK_PRICE, CTX_FINITE, CTX_REMEMBER_FINITE,
    CTX_CACHE_LIMIT, CTX_SIZE
};

/* The frame window's arrays of one side: WindowAccumulator.side_arrays */
typedef struct {
    PyObject *index, *step, *cur, *last, *acc, *index_miss;
    long long i_min, n;
    int called; /* set when index_miss (Python code) ran */
} Window;

/* ---- shared functions -------------------------------------------------------------------------- */

/* levels.c */
NATIVE_INTERNAL PyObject *native_lookup(PyObject *cache, PyObject *key);
NATIVE_INTERNAL PyObject *native_cached_levels(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
NATIVE_INTERNAL PyObject *native_remember(PyObject *text, PyObject *cache, PyObject *remember, int positive,
                                          PyObject *const *ctx);

/* binance.c */
NATIVE_INTERNAL PyObject *native_binance_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
NATIVE_INTERNAL PyObject *native_normalize_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* depth.c */
NATIVE_INTERNAL PyObject *native_depth_from_bytes(PyObject *payload, PyObject *symbol, PyObject *instrument,
                                                  PyObject *recv_ns, PyObject *const *ctx);
NATIVE_INTERNAL PyObject *native_depth_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* book.c */
NATIVE_INTERNAL int native_compare(PyObject *a, PyObject *b, int op);
NATIVE_INTERNAL int native_bucket_of(PyObject *index, PyObject *step, PyObject *index_miss, long long i_min,
                                     PyObject *price, long long *j, int *called);
NATIVE_INTERNAL int native_window_from(PyObject *arrays, PyObject *index_miss, Window *w);
NATIVE_INTERNAL int native_apply_levels(PyObject *book, PyObject **tops_ref, PyObject *levels, PyObject *side,
                                        int bids, PyObject *t, Window *window, PyObject *side_tops,
                                        Py_ssize_t kept, PyObject *zero);
NATIVE_INTERNAL int native_levels_shape(PyObject *levels);
NATIVE_INTERNAL PyObject *native_set_levels(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* run.c */
NATIVE_INTERNAL PyObject *native_binance_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* sides.c */
NATIVE_INTERNAL int native_decimal_exact(PyObject *value, int64_t *coefficient, int *scale);
NATIVE_INTERNAL int native_decimal_exact_text(PyObject *value, int64_t *coefficient, int *scale);
NATIVE_INTERNAL PyObject *native_side_state(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
NATIVE_INTERNAL PyObject *native_open_side(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* exact.c */
NATIVE_INTERNAL int native_exact_ready(PyObject *module);
NATIVE_INTERNAL int native_exact_refresh(void);
NATIVE_INTERNAL int native_is_exact(PyObject *value);
NATIVE_INTERNAL int native_exact_float(PyObject *value, double *out);
NATIVE_INTERNAL int native_exact_cmp(int64_t x, int sx, int64_t y, int sy);
NATIVE_INTERNAL int native_compare_values(PyObject *a, PyObject *b, int op);
NATIVE_INTERNAL int native_exact_bucket(PyObject *price, PyObject *step, long long *i);
NATIVE_INTERNAL int native_sort_values(PyObject *items, int reverse);
NATIVE_INTERNAL PyObject *native_sort_prices(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
NATIVE_INTERNAL PyObject *native_exact_notional(PyObject *price, PyObject *qty, PyObject *old);
NATIVE_INTERNAL PyObject *native_exact_add_notional(PyObject *value, Py_ssize_t held, PyObject *price,
                                                    PyObject *qty, PyObject *old);

/* declayout.c */
extern NATIVE_INTERNAL int native_decimal_layout;
NATIVE_INTERNAL int native_decimal_read(PyObject *value, int64_t *coefficient, int *scale);
NATIVE_INTERNAL int native_layout_ready(PyObject *module);
NATIVE_INTERNAL PyObject *native_decimal_parts(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* lines.c */
NATIVE_INTERNAL PyObject *native_parse_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* builder.c */
extern NATIVE_INTERNAL PyTypeObject SlotBuilderType;
NATIVE_INTERNAL PyObject *native_slot_builder(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif /* MOONSTREAM_NATIVE_H */
