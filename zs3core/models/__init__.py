"""Networks: DeepLabv3+ (deeplab), the feature generators (gmmn, gcn, primitive) and the pixel classifier.

Generators are built, fitted, sampled and loaded through the registry of :mod:`zs3core.generators`.
"""
