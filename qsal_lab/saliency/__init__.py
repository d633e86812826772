"""Saliency for qsal_lab: attributions for float, PACT and int8 ONNX models alike, and saliency-guided training.

    from qsal_lab.saliency import attribute, normalize_maps, SGTConfig
    maps = attribute(model, x, y, method="ig")        # saliency | ig | smoothgrad | gradcam | occlusion
    shown = normalize_maps(maps)                      # |map| per image, clipped at its 99th percentile, in [0, 1]
    curves = faithfulness(model, x, y)                # accuracy as the most salient pixels go, vs random (metrics.py)
    concentration(maps), agreement(maps, other_maps), cascading_randomization(model, x, y, "saliency")
    saliency_grid(x, maps_by_method(model, x, y), name="methods")   # figures (plots.py)
    train_model("mnist", sgt=SGTConfig(fraction=0.5, lam=1.0))   # saliency-guided training (sgt.py)
"""
from .attribution import (GRADIENT_METHODS, METHODS, PERTURBATION_METHODS, attribute, black_baseline,
                          last_conv_layer, make_baseline, method_options, normalize_maps)
from .masking import mask_features, replace_pixels
from .metrics import (FRACTIONS, RemovalCurve, agreement, cascading_randomization, concentration, entropy,
                      faithfulness, gini, random_saliency, removal_curve, spearman, ssim, summarize, topk_iou)
from .sgt import (SGTConfig, SGTStep, compare_steps, default_fraction, fused_step, input_saliency, kl_to_masked,
                  naive_step, sgt_loss, sgt_step, train_step_seconds)
from .plots import (maps_by_method, maps_by_model, overlay, plot_randomization, plot_removal_curves,
                    saliency_grid)
