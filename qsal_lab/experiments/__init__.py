"""Experiment drivers: the studies that a chapter and its benchmark both run, one module per study.

A driver composes the core modules (data, models, train, quant, saliency, edge) into a
recipe, a sweep and its table; the core modules hold no book-specific logic. A chapter
calls the driver and shows its results; `bench/<study>.py` calls the same driver and writes
them to bench/results/ with the targets marked met or missed.

    pact_sweep   chapter 4 + bench/quant_mnist.py: PACT QAT against PTQ at W/A = 8, 4, 3, 2 bits
    cifar        chapter 8 + bench/cifar_resnet20.py: ResNet-20 on CIFAR-10 or its labelled stand-in
    medical      chapter 9 + bench/medical.py: one MedMNIST flag through every method, scored clinically
    report       one convention for "points against float": drop = float - quantized, said in words;
                 what every benchmark records (load average) and writes (JSON + Markdown)
"""
