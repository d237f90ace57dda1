"""Training the Meta AutoEncoder: packaged photos and their cached tokens (`photos`), and `prosemc fit` (`fit`).

It sits above `models` (it runs a model's edge half to get tokens), so `codec` stays free of model code.
"""
