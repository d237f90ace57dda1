"""The cloud as a service (`prosemc serve`) and the edge side of the loop (`prosemc send`).

    edge (send)                                         cloud (serve: ASGI app on uvicorn, model kept warm)
    GET /v1/models  ──────────────────────────────────► model, codecs, weights sha256, answer times
    encode image -> header + layers (plan: deadline × bandwidth, confidence)
    PUT /v1/query?q=..&events=1 (chunked .psem) ──────► PsemReader in a thread, layer by layer
                   ◄────────────── NDJSON events: {"event": "layer", "layer": k, "estimate": ...}
    (end of body | server deadline | confidence)        decode the complete layers, answer (one model thread)
                   ◄────────────── {"event": "answer", ...the `prosemc query --json` report}

    protocol.py  paths, parameters, events, error statuses      session.py  one stream, layer by layer
    cloud.py     the warm model: serialised answers, timings    app.py      the starlette app (auth, logs)
    netcat.py    raw TCP: a question line, then the stream      runner.py   uvicorn (+ netcat) or Ray Serve
    client.py    HTTP/1.1 over one socket (h11), retries        plan.py     deadline, bandwidth, confidence
    send.py      the edge loop: encode, plan, stream, answer
"""
