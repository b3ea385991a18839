"""zs3-pipeline: zero-shot semantic segmentation (ZS3Net, ZS5Net, PADing) as a DVC pipeline; see ARCHITECTURE.md."""
