"""Keep third-party model libraries from talking over royalty's own output."""

from __future__ import annotations

import os
import sys


def quiet_model_libraries() -> None:
    """Silence transformers' and diffusers' advice and loading progress bars.

    They log advice (optional backends, unused LoRA prefixes) and draw progress bars while
    loading local weights; royalty reports its own progress and turns real problems into its
    own errors. A user's explicit environment setting wins.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Read at import: libraries already imported are told directly.
    for name in ("transformers", "diffusers"):
        if name in sys.modules and os.environ[f"{name.upper()}_VERBOSITY"] == "error":
            logging = sys.modules[name].utils.logging
            logging.set_verbosity_error()
            logging.disable_progress_bar()
