"""nnunet_ray: NVIDIA's nnU-Net as a Ray-distributed cross-validation, tuning and ensembling system."""

__version__ = "0.1.0"
