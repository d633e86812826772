"""The exercises' checks, one module per chapter; each runs a learner's function on cases with known
answers and either prints what passed or raises `CheckFailed` saying exactly what is wrong.

    from qsal_lab.checks.mnist_baseline import check_accuracy        # chapter 1
    from qsal_lab.checks.quant_basics import check_quantize          # chapter 2
    from qsal_lab.checks.ptq import check_minmax_observer            # chapter 3
    from qsal_lab.checks.pact import check_pact_forward              # chapter 4
    from qsal_lab.checks.saliency_maps import check_topk_iou         # chapter 5
    from qsal_lab.checks.sgt import check_sgt_mask                   # chapter 6
    from qsal_lab.checks.quantized_saliency import check_rank_agreement  # chapter 7
    from qsal_lab.checks.cifar import check_quantize_weight          # chapter 8
    from qsal_lab.checks.medical import check_sensitivity_specificity  # chapter 9
    from qsal_lab.checks.edge_benchmarking import check_measure      # chapters 10 and 11

`common` holds what they share (CheckFailed, calling the learner's code, reading its numbers, comparing them with
one tolerance policy). tests/checks/mistakes/ lists the mistakes each check names and the right answers it accepts.
"""
from .common import CheckFailed

__all__ = ["CheckFailed"]
