"""Saliency for qsal_lab: attributions for float, PACT and int8 ONNX models alike.

    from qsal_lab.saliency import attribute, normalize_maps
    maps = attribute(model, x, y, method="ig")        # saliency | ig | smoothgrad | gradcam | occlusion
    shown = normalize_maps(maps)                      # |map| per image, clipped at its 99th percentile, in [0, 1]
"""
from .attribution import (GRADIENT_METHODS, METHODS, PERTURBATION_METHODS, attribute, black_baseline,
                          last_conv_layer, make_baseline, method_options, normalize_maps)
