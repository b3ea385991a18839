"""Networks: DeepLabv3+ (deeplab), its encoders (bodies: ResNet, EfficientNet-Lite) and the pixel
classifier (classifier).

The feature generators live in :mod:`zs3core.generators` (one module per kind, one registry).
"""
