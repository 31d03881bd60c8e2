from app.cli import _entry

_entry()
