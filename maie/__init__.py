"""MAIE: audio → raw transcript, clean transcript and a schema-valid structured summary.

The deployable parts live in the top-level folders api/, operator/ and runner/ and install as
maie.api, maie.operator and maie.runner. When Python runs from the root of a source checkout,
this `maie/` folder shadows the installed package, so the checkout's root joins its search path
and the same names resolve to the same files.
"""

from pathlib import Path as _Path

__version__ = "1.0.0"

_root = _Path(__file__).resolve().parent.parent
if (_root / "runner" / "pipeline.py").is_file() and str(_root) not in __path__:
    __path__.append(str(_root))
