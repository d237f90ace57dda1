"""`prosemc serve` and `prosemc send` end to end: a real uvicorn server process on 127.0.0.1 (ephemeral port),
real curl and nc, raw sockets for stalled, killed and hostile clients."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from prosemc import format as psem
from prosemc.codec import make_codec
from prosemc.format import PsemHeader
from prosemc.serve.protocol import status_for
from serving import ServerProcess, http

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = sorted((ROOT / "formats" / "vectors" / "attacks").glob("*.psem"))
CAT_LABELS = {"tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian Mau", "lynx"}
QUERY = "/v1/query?q=what+is+shown%3F"
AUTH = {"Authorization": "Bearer s3cret"}

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="`make test` installs curl; run through make")
needs_nc = pytest.mark.skipif(shutil.which("nc") is None, reason="`make test` installs netcat; run through make")


@pytest.fixture(scope="module")
def server(cli_env):
    """The warm lite server with its language model."""
    process = ServerProcess(["--port", "0", "--nc-port", "0"], cli_env)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def chelsea_psem(chelsea, cli_env, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("psem") / "chelsea.psem"
    done = subprocess.run([sys.executable, "-m", "prosemc", "encode", str(chelsea), "-o", str(path)],
                          capture_output=True, env=cli_env)
    assert done.returncode == 0, done.stderr
    return path.read_bytes()


def pieces_of(data: bytes) -> list[bytes]:
    """The stream cut into header + layer 1, then one piece per layer (how send writes it)."""
    reader = psem.PsemReader(data)
    ends = [chunk.end for chunk in reader]
    starts = [0] + ends[:-1]
    return [data[: ends[0]]] + [data[s:e] for s, e in zip(starts[1:], ends[1:])]


def other_model_stream() -> bytes:
    """A valid .psem made by another model (a Hugging Face id), baseline-coded."""
    tokens = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    codec = make_codec("baseline", layers=2)
    encoded = codec.encode(tokens)
    described = codec.describe()
    header = PsemHeader(encoder="tiny-llava@0123456789ab", token_shape=(16, 32),
                        codec={**described["codec"], "params": encoded.params}, entropy=described["entropy"], layers=2)
    return psem.dumps(header, encoded.layers)


def test_health_and_models_name_the_weights(server):
    status, body = http(server.url, path="/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "model": "lite", "pid": server.process.pid}
    status, body = http(server.url, path="/v1/models")
    info = json.loads(body)
    shipped = hashlib.sha256((ROOT / "prosemc" / "data" / "metaae-lite.safetensors").read_bytes()).hexdigest()
    assert status == 200 and info["model"] == "lite" and info["default_codec"] == "metaae/1" and info["llm"] is True
    assert info["weights_sha256"]["metaae"] == shipped
    assert set(info["weights_sha256"]) == {"efficientnet-lite0", "metaae", "smollm2"}
    assert {"labels", "llm"} <= set(info["answer_ms"])


@needs_curl
def test_curl_recipe_streams_and_replies_like_query(server, chelsea, chelsea_psem, cli_env, valid_report):
    """`prosemc encode | curl -T -` gets the same JSON as `prosemc query --json` (plus the server's keys)."""
    import io

    from prosemc.models import load_model
    from prosemc.pipeline import read_tokens
    from prosemc.report import answer_report

    piped = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"prosemc encode {chelsea} -o - | curl -sS --fail-with-body -T - '{server.url}{QUERY}&estimate=1'"],
                           capture_output=True, env=cli_env, timeout=300)
    assert piped.returncode == 0, piped.stderr
    reply = json.loads(piped.stdout)
    decoded = read_tokens(io.BytesIO(chelsea_psem))  # what `prosemc query --json` computes, in this process
    expected = answer_report(decoded, load_model("lite").answer(decoded.edge, "what is shown?"), {}, input="<request>",
                             question="what is shown?")
    assert set(expected) <= set(reply)
    for key in ("schema", "command", "input", "question", "answer", "labels", "model", "codec", "tokens", "layers",
                "layers_declared", "header_bytes", "bytes", "status"):
        assert reply[key] == expected[key], key
    valid_report(reply, "query")
    assert reply["labels"][0]["label"] in CAT_LABELS and reply["stopped_by"] == "end"
    assert 0.99 <= reply["estimate"] <= 1.0 and len(reply["layer_arrivals_ms"]) == 6
    assert set(reply["timings_ms"]) >= {"read_decode", "answer"}


def test_events_report_each_layer_with_its_estimate(server, chelsea_psem):
    status, body = http(server.url, "PUT", QUERY + "&events=1&llm=0", pieces_of(chelsea_psem))
    events = [json.loads(line) for line in body.splitlines()]
    assert status == 200 and [e["event"] for e in events] == ["header"] + ["layer"] * 6 + ["answer"]
    estimates = [e["estimate"] for e in events[1:7]]
    assert estimates == sorted(estimates) and 0.4 < estimates[0] < 0.8 and estimates[-1] > 0.99
    assert [e["bytes"] for e in events[1:7]] == [chunk.end for chunk in psem.PsemReader(chelsea_psem)]
    answer = events[-1]
    assert len(answer["layers"]) == 6 and answer["labels"][0]["label"] in CAT_LABELS
    assert events[0]["codec"]["name"] == "metaae" and events[0]["layers_declared"] == 6
    assert answer["answer"].startswith("The photo most likely shows")


def test_server_stops_at_the_confidence(server, chelsea_psem):
    status, body = http(server.url, "PUT", QUERY + "&confidence=0.9&llm=0", pieces_of(chelsea_psem))
    reply = json.loads(body)
    assert status == 200 and reply["stopped_by"] == "confidence"
    assert 1 <= len(reply["layers"]) < 6 and reply["estimate"] >= 0.9


def test_server_answers_at_the_deadline_from_what_arrived(server, chelsea_psem):
    """Header + layer 1 now, the rest 2 s later: a 0.5 s deadline answers from layer 1 alone."""
    start = time.monotonic()
    status, body = http(server.url, "PUT", QUERY + "&deadline=0.5&llm=0", pieces_of(chelsea_psem), pause_s=2.0)
    reply = json.loads(body)
    assert status == 200 and reply["stopped_by"] == "deadline" and len(reply["layers"]) == 1
    assert reply["timings_ms"]["stream"] < 1500 and time.monotonic() - start >= 0.5


@pytest.mark.parametrize("vector", ATTACKS, ids=[p.stem for p in ATTACKS])
def test_hostile_streams_get_a_4xx_json_error_and_the_server_keeps_serving(server, vector):
    mark = len(server.lines)
    status, body = http(server.url, "PUT", QUERY + "&llm=0", [vector.read_bytes()] if vector.stat().st_size else [])
    reply = json.loads(body)
    try:
        psem.loads(vector.read_bytes())
        expected = None
    except psem.PsemError as error:
        expected = status_for(error)  # 413 for limits, 400 for the rest
    assert 400 <= status < 500 and reply["status"] == status and reply["error"], reply
    if expected:
        assert status == expected, reply
    assert "Traceback" not in reply["error"]
    assert f" {status} " in server.log_after(mark, f" {status} ")
    assert http(server.url, path="/healthz")[0] == 200


def test_another_models_stream_is_refused_naming_both(server):
    status, body = http(server.url, "PUT", QUERY, [other_model_stream()])
    reply = json.loads(body)
    assert status == 409 and "tiny-llava@0123456789ab" in reply["error"] and "'lite'" in reply["error"]


def test_missing_question_and_bad_parameters(server, chelsea_psem):
    assert http(server.url, "PUT", "/v1/query", [chelsea_psem])[0] == 400
    status, body = http(server.url, "PUT", QUERY + "&deadline=soon", [chelsea_psem])
    assert status == 400 and "deadline" in json.loads(body)["error"]
    assert http(server.url, "GET", "/nowhere")[0] == 404


def test_a_client_killed_mid_stream_is_logged_and_nobody_else_notices(server, chelsea_psem):
    mark = len(server.lines)
    http(server.url, "PUT", QUERY, pieces_of(chelsea_psem), close_after=2)
    assert "client-gone" in server.log_after(mark, "client-gone")
    status, body = http(server.url, "PUT", QUERY + "&llm=0", [chelsea_psem])
    assert status == 200 and len(json.loads(body)["layers"]) == 6
    assert json.loads(body)["estimate"] is None  # not asked for: no second decode


@needs_nc
def test_netcat_recipe_against_the_persistent_server(server, chelsea, cli_env):
    """cli/psem-ask: the question line, then the stream, into real `nc`; one JSON line back."""
    for budget, form in ((1500, []), (384, ["--compact"])):
        extra = form + ["--max-bytes", str(budget)]
        sent = subprocess.run(["psem-ask", str(chelsea), "127.0.0.1", str(server.nc_port), "what is shown?", *extra],
                              capture_output=True, env=cli_env, timeout=300)
        assert sent.returncode == 0, sent.stderr
        reply = json.loads(sent.stdout)
        assert reply["model"] == "lite" and reply["answer"] and reply["labels"][0]["label"] in CAT_LABELS
        assert reply["status"] == ("prefix" if budget else "complete")
        if budget:
            assert reply["bytes"] <= budget


@needs_nc
def test_netcat_without_a_question_line_is_told_how(server, chelsea_psem):
    done = subprocess.run(["nc", "-N", "127.0.0.1", str(server.nc_port)], input=chelsea_psem, capture_output=True,
                          timeout=60)
    reply = json.loads(done.stdout)
    assert reply["status"] == 400 and "question line" in reply["error"]


def run_send(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prosemc", "send", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_send_prints_the_answer(server, chelsea, cli_env):
    done = run_send([str(chelsea), server.url, "what is shown?"], cli_env)
    assert done.returncode == 0, done.stderr
    assert any(word in done.stdout.lower() for word in ("cat", "mau", "tabby"))
    assert "prosemc: sent 6 of 6 layers" in done.stderr


@pytest.fixture(scope="module")
def chelsea_edge(chelsea):
    """chelsea encoded once on this side (lite tokens, metaae layers), as send frames it."""
    from prosemc.models import load_model
    from prosemc.models.images import load_image
    from prosemc.serve.send import frame_tokens

    return frame_tokens(load_model("lite").encode_image(load_image(str(chelsea))), "lite", make_codec("metaae"))


def send_in_process(server, edge, log=None, **options):
    from prosemc.serve.send import SendOptions, send

    lines: list[str] = []
    report = send(None, SendOptions(url=server.url, question="what is shown?", **options), log or lines.append, edge=edge)
    return report, lines


def test_send_with_confidence_stops_early_and_keeps_the_label(server, chelsea_edge):
    report, _ = send_in_process(server, chelsea_edge, confidence=0.9, llm=False)
    sent = report["send"]
    first = next(k for k, e in enumerate(sent["estimates"], 1) if e >= 0.9)
    assert sent["plan"] == "confidence" and len(sent["layers"]) == first < 6 == sent["layers_declared"]
    assert len(report["layers"]) == first and sent["cloud_estimates"] == sent["estimates"][:first]
    assert [layer["bytes"] for layer in sent["layers"]] == [layer["bytes"] for layer in report["layers"]]
    assert report["labels"][0]["label"] in CAT_LABELS


def test_send_waiting_for_the_clouds_estimates(server, chelsea_edge):
    report, _ = send_in_process(server, chelsea_edge, confidence=0.8, llm=False, estimate_from="cloud")
    sent = report["send"]
    estimates = sent["cloud_estimates"]
    assert sent["plan"] == "confidence" and estimates[-1] >= 0.8 and all(e < 0.8 for e in estimates[:-1])
    assert sent["estimates"] is None and len(sent["layers"]) == len(estimates) == len(report["layers"])


def test_send_under_an_impossible_deadline_sends_layer_one_and_says_so(server, chelsea_edge):
    # 2 ms: layer 1 alone (~800 bytes on the wire) needs ~6 ms at 1 Mbps, whatever the machine's speed
    report, log = send_in_process(server, chelsea_edge, deadline_s=0.002, bandwidth="1mbit", llm=False)
    assert len(report["send"]["layers"]) == 1 and report["send"]["plan"] == "deadline-miss"
    assert len(report["layers"]) == 1 and any("deadline cannot be met" in line for line in log)


def test_send_with_a_tight_bandwidth_budget_plans_fewer_layers(server, chelsea_edge):
    """At 20 kbit/s, a 1.5 s deadline with a label-only answer leaves room for a few layers, not all six."""
    report, _ = send_in_process(server, chelsea_edge, deadline_s=1.5, bandwidth="20kbit", llm=False)
    sent = report["send"]
    assert sent["plan"] == "deadline" and 1 <= len(sent["layers"]) < 6 == sent["layers_declared"]
    assert (sent["bytes"] + 300) * 8 / 20e3 <= 1.5 and len(report["layers"]) == len(sent["layers"])


def test_send_to_another_models_server_is_refused_before_streaming(server):
    """An edge encoding for another model gets one line naming both models, and no stream reaches the server."""
    from prosemc.errors import ModelError
    from prosemc.serve.send import frame_tokens

    parsed = psem.loads(other_model_stream())
    from prosemc.models import EdgeTokens

    tokens = EdgeTokens(make_codec("baseline").decode(parsed.header.codec_params, parsed.layers, (16, 32)))
    edge = frame_tokens(tokens, parsed.header.encoder, make_codec("baseline"))
    mark = len(server.lines)
    with pytest.raises(ModelError, match=r"serves model 'lite', but this edge encodes for 'tiny-llava@0123456789ab'"):
        send_in_process(server, edge)
    time.sleep(0.2)
    assert not any(" 200 " in line or "/v1/query" in line for line in server.lines[mark:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_send_retries_while_the_server_restarts_and_gives_up_when_it_stays_down(chelsea, cli_env):
    port = free_port()
    down = run_send([str(chelsea), f"http://127.0.0.1:{port}", "what?", "--retries", "1"], cli_env)
    assert down.returncode == 2 and "retrying in 0.5 s" in down.stderr
    assert down.stderr.strip().splitlines()[-1].startswith("prosemc: error: cannot reach the server")
    # the server is down (as after a kill) when the client starts, and comes back while it retries
    client = subprocess.Popen([sys.executable, "-m", "prosemc", "send", str(chelsea), f"http://127.0.0.1:{port}",
                               "what is shown?", "--no-llm", "--retries", "8", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env)
    time.sleep(1.0)
    second = ServerProcess(["--port", str(port), "--no-llm"], cli_env)
    try:
        out, err = client.communicate(timeout=120)
    finally:
        second.stop()
    assert client.returncode == 0, err
    assert "retrying in" in err and json.loads(out)["send"]["attempts"] >= 2


@pytest.fixture(scope="module")
def token_server(cli_env):
    """Label-only, token required, 4 KB bodies, 2 s read timeout."""
    process = ServerProcess(["--port", "0", "--nc-port", "0", "--no-llm", "--token", "s3cret", "--max-body", "8192",
                             "--read-timeout", "2"], cli_env)
    yield process
    process.stop()


def test_token_is_required_everywhere(token_server, chelsea, chelsea_psem, chelsea_edge, cli_env):
    assert http(token_server.url, path="/healthz")[0] == 401
    status, body = http(token_server.url, "PUT", QUERY, [chelsea_psem], headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "bearer token" in json.loads(body)["error"]
    status, body = http(token_server.url, "PUT", QUERY, [chelsea_psem], headers=AUTH)
    assert status == 200 and len(json.loads(body)["layers"]) == 6
    from prosemc.serve.send import ServerRefused

    with pytest.raises(ServerRefused, match="bearer token"):
        send_in_process(token_server, chelsea_edge, llm=False, retries=0)
    env = {**cli_env, "PROSEMC_TOKEN": "s3cret"}
    assert run_send([str(chelsea), token_server.url, "what?", "--no-llm"], env).returncode == 0


@needs_nc
def test_netcat_needs_the_token_line(token_server, chelsea_psem):
    def ask(prefix: bytes) -> dict:
        done = subprocess.run(["nc", "-N", "127.0.0.1", str(token_server.nc_port)], input=prefix + chelsea_psem,
                              capture_output=True, timeout=60)
        return json.loads(done.stdout)

    assert ask(b"what is shown?\n")["status"] == 401
    assert len(ask(b"Bearer s3cret\nwhat is shown?\n")["layers"]) == 6


def test_a_body_over_the_servers_limit_gets_413(token_server, chelsea_psem):
    big = chelsea_psem + b"\0" * 8192  # more than --max-body 8192
    status, body = http(token_server.url, "PUT", QUERY, [big[:3000], big[3000:]],
                        headers=AUTH)
    assert status == 413 and "8192-byte limit" in json.loads(body)["error"]


def test_label_only_server_refuses_language_questions(token_server, chelsea_psem):
    status, body = http(token_server.url, "PUT", QUERY + "&llm=1", [chelsea_psem],
                        headers=AUTH)
    assert status == 400 and "label-only" in json.loads(body)["error"]


def test_a_stalled_client_gets_408_while_others_are_served(token_server, chelsea_psem):
    results: dict[str, tuple[int, bytes]] = {}
    mark = len(token_server.lines)
    stalled = threading.Thread(target=lambda: results.update(
        stalled=http(token_server.url, "PUT", QUERY, pieces_of(chelsea_psem)[:1] + [b""], pause_s=4, headers=AUTH)))
    # 4 s of silence after the first piece: the server's 2 s read timeout fires first
    stalled.start()
    time.sleep(0.3)
    start = time.monotonic()
    status, body = http(token_server.url, "PUT", QUERY, [chelsea_psem], headers=AUTH)
    served_in = time.monotonic() - start
    stalled.join(timeout=60)
    assert status == 200 and len(json.loads(body)["layers"]) == 6 and served_in < 1.5
    code, reply = results["stalled"]
    assert code == 408 and "no data for 2 s" in json.loads(reply)["error"]
    assert "408" in token_server.log_after(mark, " 408 ")
