"""LoRA file tools: `easytrain lora info|resize|merge|extract|convert`.

One module per job; all work on kohya-format files (ours or anyone's) for the
architectures the checkpoint layout knows (layout.py), and read checkpoints
tensor by tensor (stream.py) so a full-size base never sits in memory twice.
commands.py is the CLI side and imports nothing heavy until a command runs.
"""
