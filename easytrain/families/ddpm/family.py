"""What the DDPM families (SD1, SD2, SDXL) share as families: loading around their own parts (SDPA
attention, kohya's --vae) and the objective on their loaded schedule."""

from __future__ import annotations

from easytrain.families.base import Family
from easytrain.families.ddpm.objective import DdpmObjective


class DdpmFamily(Family):
    def load(self, path, detection, arch, prediction, dtype, options=None, vae=None):
        return self._ready(self.load_parts(path, detection, arch, prediction, dtype), vae, dtype)

    def load_builtin_tiny(self, dtype, vae=None):
        return self._ready(self.load_tiny_parts(dtype), vae, dtype)

    def load_parts(self, path, detection, arch, prediction, dtype):
        """The family's BaseModel from a file or a folder."""
        raise NotImplementedError

    def load_tiny_parts(self, dtype):
        raise NotImplementedError

    @staticmethod
    def _ready(base, vae, dtype):
        if vae is not None:  # kohya's --vae: latents and samples through another VAE
            from easytrain.model.vae_file import load_vae

            base.vae = load_vae(vae, base.vae.config, dtype=dtype)
        from easytrain.families.ddpm.text_keys import install

        install(base.unet)  # PyTorch SDPA (flash / memory-efficient kernels), the text's keys made once a step
        return base

    def objective(self, base, loss, device) -> DdpmObjective:
        return DdpmObjective(base.noise_scheduler, base.prediction_type, loss,
                             scaling_factor=float(base.vae.config.scaling_factor), device=device)
