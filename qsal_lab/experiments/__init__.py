"""Studies: what a chapter and its benchmark both run, one module per study, each built on the contract in `study`.

A study composes the core modules (data, models, train, quant, saliency, edge) into recipes and rows; the core
modules hold no book-specific logic. A chapter calls the study and shows its rows; `bench/<study>.py` declares the
same study and its targets to the one runner in `benchmark`, which writes bench/results/ with each target met or MISSED.

    study          the contract: Row, Precision, FineTune, the row builders, against, find_row, table, ship_checkpoint
    pact_sweep     chapter 4 + bench/quant_mnist.py: PACT QAT against PTQ at W/A = 8, 4, 3, 2 bits
    saliency_sweep chapters 6-7 + bench/saliency_mnist.py: saliency of float, PACT and int8 models side by side
    cifar          chapter 8 + bench/cifar_resnet20.py: ResNet-20 on CIFAR-10 or its labelled stand-in
    medical        chapter 9 + bench/medical.py: one MedMNIST flag through every method, scored clinically
    backends       bench/edge.py: three models, eager PyTorch vs ONNX Runtime fp32 vs int8
    report         "points against float" in words, Markdown tables, JSON + Markdown results, targets met
    benchmark      the runner every bench/*.py declares itself to
"""
