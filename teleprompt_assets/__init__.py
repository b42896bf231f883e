"""teleprompt-assets: continuous prompt optimization for production DSPy programs.

LiteLLM (imported by DSPy) fetches a model price list from the internet at import unless told
otherwise, retrying for ~8 s when offline. Air-gapped installs are a supported mode, so the local
copy it ships with is the default here; set ``LITELLM_LOCAL_MODEL_COST_MAP=False`` to fetch.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
