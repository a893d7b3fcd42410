"""Training of the tiny default models: the Shakespeare corpus and its split, the BPE
tokenizer, the MDLM and AR losses, the recipes and the training loop.

    python -m experiments.train model=ar_tiny   # the entry point; this package imports none
"""
