/* binance_run: step_orderbook's event loop while the frame source is the Binance book (part of
 * moonstream._native, see module.c). */

#include "native.h"

/* ---- binance_run ---------------------------------------------------------------------------- */

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
    int next = native_compare(prev, b->last_u, Py_EQ);
    if (next > 0) {
        next = native_compare(last, b->last_u, Py_GT);
    }
    if (next <= 0) {
        result = next;
        goto done;
    }
    /* shapes first: levels, sides, best prices, window arrays (none is changed by applying a side) */
    if (!native_levels_shape(levels[0]) || !native_levels_shape(levels[1]) || !PyDict_CheckExact(b->bids) ||
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
            track[k] = native_window_from(PyTuple_GET_ITEM(b->arrays, k), ctx[RUN_INDEX_MISS], &windows[k]);
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
        int failed = native_apply_levels(side_book, &tops, levels[k], side, k == 0, t, track[k] ? &windows[k] : NULL,
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
    int passed = native_compare(u, b->last_u, Py_LE);
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
        int same = native_compare(PyTuple_GET_ITEM(item, 0), u, Py_EQ);
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
        int equal = native_compare_values(bid, t_bid, Py_EQ);
        if (equal > 0) {
            equal = native_compare_values(ask, t_ask, Py_EQ);
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
    int synced = native_compare(b->status, ctx[RUN_SYNCED], Py_EQ);
    if (synced <= 0) {
        return synced;
    }
    return b->last_u != Py_None && PyDict_CheckExact(b->pending) && PyDict_GET_SIZE(b->pending) == 0;
}

/* step_orderbook's event loop from events[k] while the frame source is the Binance book: events of
 * other symbols and kinds skipped, the next diff of a synced chain (with the clock's advance) and
 * bookTickers the book has passed handled here. Returns (k, clock) at the first event the Python loop
 * must run (or the end), or NotImplemented. */
PyObject *
native_binance_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (native_exact_refresh() < 0) { /* ExactSums only in the default-like decimal context */
        return NULL;
    }
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
        int other = value == NULL ? -1 : native_compare(value, symbol, Py_NE);
        Py_XDECREF(value);
        if (other != 0) {
            stop = other < 0 ? -1 : 0;
            goto next;
        }
        value = PyObject_GetAttr(event, k_exchange);
        int binance = value == NULL ? -1 : native_compare(value, ctx[RUN_EXCHANGE], Py_EQ);
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
