"""Edge bundles: a model's edge half as a (quantised) ONNX graph + the codec's weights + a checked manifest.

    prosemc export (build.py):  torch module --onnx_export--> fp32 graph --quantise (int8 QDQ, bias correction)-->
                                encoder.onnx + metaae.safetensors + manifest.json   (checked against a target profile)
    prosemc encode --bundle (bundle.py): image --onnxruntime--> tokens --numpy codec--> .psem   (no torch)

Only bundle.py, manifest.py and pixels.py are on the edge path; the rest needs torch / onnx and runs at export.
"""
