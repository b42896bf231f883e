"""teleprompt-assets: continuous prompt optimization for production DSPy programs.

LiteLLM (imported by DSPy) fetches a model price list from the internet at import unless told
otherwise, retrying for ~8 s when offline. Air-gapped installs are a supported mode, so the local
copy it ships with is the default here; set ``LITELLM_LOCAL_MODEL_COST_MAP=False`` to fetch.

``py_ecc`` (imported by eth-account, which signs and verifies attestations) raises the interpreter's
recursion limit to 100,000 when imported. Python's own parsers (``json``, ``ast``, ``pickle``…) then
overflow the C stack on deeply nested input instead of raising ``RecursionError``: a 200 KB file of
brackets killed ``teleprompt verify`` with SIGSEGV. The package imports it first, here, and puts the
limit back; every parse of input nobody vouches for is also depth-bounded
(``core.encoding.loads_bounded``), for processes that imported py_ecc before this package.
"""

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _keep_recursion_limit() -> None:
    """Import py_ecc now and undo its recursion limit (unless it was imported before this package,
    by whoever owns the process, whose setting is then left alone)."""
    if "py_ecc" in sys.modules:
        return
    limit = sys.getrecursionlimit()
    import py_ecc  # noqa: F401 - imported for its side effect, undone below

    sys.setrecursionlimit(limit)


_keep_recursion_limit()
