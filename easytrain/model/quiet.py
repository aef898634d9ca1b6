"""Turn down diffusers/transformers chatter (info logs, progress bars) while easytrain loads models, and
keep diffusers from importing what easytrain does not use (model/lean_imports.py)."""

from __future__ import annotations

import logging

from easytrain.model.lean_imports import diffusers_without_bitsandbytes


def quiet_model_libraries() -> None:
    """Errors still show and exceptions still raise; only info/warning noise and bars go."""
    # bitsandbytes warns at import about optional CPU kernels it cannot fetch (offline by design), and on CPUs
    # with AVX512-BF16 the `kernels` package it asks says "Skipping publisher trust check ..." offline.
    for name in ("diffusers", "transformers", "accelerate", "bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_without_bitsandbytes()
