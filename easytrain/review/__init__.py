"""Looking back at a run's output folder: which file to keep (`easytrain compare`). Stdlib and Pillow only."""
