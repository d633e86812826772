"""Quantization for qsal_lab: fake-quant primitives, PACT, QAT conversion, PTQ and packed export.

    from qsal_lab.quant import QATConfig, quantize_model, PTQConfig, ptq_model
    qat = quantize_model(model, QATConfig(w_bits=4, a_bits=4))           # train it afterwards
    ptq = ptq_model(model, PTQConfig(w_bits=8, a_bits=8), calib_loader)  # no training
"""
from .primitives import (calc_qparams, dequantize, fake_quantize, qrange, quantize, round_ste,
                         validate_bits)
from .pact import PACT, pact_alpha_l2, pact_alphas, pact_quantize
from .weights import (dorefa_codes, dorefa_from_codes, dorefa_weight, symmetric_codes, symmetric_from_codes,
                      symmetric_weight)
from .convert import QATConfig, QuantConv2d, QuantLinear, describe_quantization, quantize_model
from .ptq import (OBSERVERS, ActQuantizer, MinMaxObserver, MSEObserver, PercentileObserver, PTQConfig,
                  calibrate, fold_batchnorm, freeze_quantizers, make_observer, prepare_ptq, ptq_model)
from .packing import (load_packed, model_size_bytes, pack_bits, save_packed, state_dict_bytes,
                      unpack_bits)

# Real int8: ONNX export + onnxruntime static quantization (imported last: it may build on the above).
from .int8 import export_onnx, quantize_onnx, OnnxClassifier  # noqa: E402
