"""One adapter per architecture family: everything that differs between SD1, SD2, SDXL, ...

The rest of easytrain asks ``family_for(arch)`` (arch/registry.py) and never
compares architecture names itself. See docs/ARCHITECTURE.md.
"""
