"""prosemc: progressive semantic codec for edge-cloud vision-language inference.

    edge:  image -> vision encoder -> tokens [N, D] -> codec -> layered .psem
    cloud: any prefix of .psem layers -> codec -> tokens' [N, D] -> answerer -> answer

Importing this package is cheap: it pulls no numpy, torch or transformers.
"""

__version__ = "0.1.0"
