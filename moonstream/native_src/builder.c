/* slot_builder: a compiled positional builder of a slotted class (part of moonstream._native, see
 * module.c). */

#include "native.h"
#include <structmember.h>

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

PyTypeObject SlotBuilderType = {
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
PyObject *
native_slot_builder(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
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
