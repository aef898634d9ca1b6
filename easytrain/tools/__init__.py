"""Dataset preparation tools: caption edits and reports, image checks and fixes,
duplicates, local auto-tagging. Every change on disk can be undone.

The `easytrain tags` and `easytrain images` commands (easytrain/commands/prep.py)
are thin wrappers around these modules; the wizard's captions step uses
`caption_edits` directly.
"""
