"""OpenVLA (Prismatic DINOv2+SigLIP + Llama-2) implemented here, without the checkpoint's remote code."""
