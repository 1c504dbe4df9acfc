"""One module per tab of the app, each a ``build(ctx)`` that lays the tab out and wires its widgets."""
