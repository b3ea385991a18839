"""Networks: DeepLabv3+ (deeplab) and the pixel classifier (classifier).

The feature generators live in :mod:`zs3core.generators` (one module per kind, one registry).
"""
