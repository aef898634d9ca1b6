"""Sample images during training: the prompts file, generation with the live weights, contact sheets.

Only the light parts are imported here (the wizard checks prompt files without
torch); import ``easytrain.sampling.generate`` for generation.
"""

from easytrain.sampling.paths import (
    contact_sheet_path, parse_sample_name, sample_dir, sample_image_path, step_contact_sheet_path,
    step_sample_image_path,
)
from easytrain.sampling.prompts import SamplePrompt, parse_prompt_line, parse_prompts_file

__all__ = [
    "SamplePrompt", "parse_prompt_line", "parse_prompts_file",
    "sample_dir", "sample_image_path", "contact_sheet_path", "step_sample_image_path", "step_contact_sheet_path",
    "parse_sample_name",
]
