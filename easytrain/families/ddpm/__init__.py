"""The DDPM objective SD1, SD2 and SDXL share: noise, integer timesteps, an epsilon or v target, SNR weights."""
