"""One package per model family: everything that differs between SD1/SD2, SDXL, and the next ones.

A family package holds its detection signature, catalog entries and traced
memory (light, read by the wizard), its loading and key conversion, tiny model,
text conditioning, network targets with kohya's names and block layout,
sampling pipeline and training objective. ``registry.PACKAGES`` lists the
packages; ``registry.family_for(arch)`` is the one place a family is chosen.
The rest of easytrain never names a family (tests/test_seam.py). See
docs/ARCHITECTURE.md.
"""
