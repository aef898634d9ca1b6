"""What the DDPM families (SD1, SD2, SDXL) share as families: the objective on their loaded schedule."""

from __future__ import annotations

from easytrain.families.base import Family
from easytrain.families.ddpm.objective import DdpmObjective


class DdpmFamily(Family):
    def objective(self, base, loss, device) -> DdpmObjective:
        return DdpmObjective(base.noise_scheduler, base.prediction_type, loss,
                             scaling_factor=float(base.vae.config.scaling_factor), device=device)
