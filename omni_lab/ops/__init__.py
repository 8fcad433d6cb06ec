"""One module per op family: a GPU wrapper that checks its arguments before dispatching, and a numpy
reference of the same op (`*_ref`) used only by tests and by callers who ask for it by name."""
