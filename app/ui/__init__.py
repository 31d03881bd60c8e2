"""The Textual dashboard: a live run (`wattflow run`) or a replay (`wattflow replay`).

The dashboard is one more subscriber of the event stream (through a coalescing bus
queue) and changes knobs only through `Runner.set_knob`; it computes nothing the
headless view cannot.
"""
