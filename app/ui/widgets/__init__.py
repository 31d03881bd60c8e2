"""One module per dashboard panel; each has `show(frame)` and paints nothing on its own."""
