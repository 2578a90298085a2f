/* parse_lines: the raw minute files' lines as records (part of moonstream._native, see module.c). */

#include "native.h"

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
PyObject *
native_parse_lines(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
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
