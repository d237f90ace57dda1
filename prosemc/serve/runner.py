"""Run the server: uvicorn (+ the netcat port) in one event loop, or the same app as a Ray Serve deployment.

Sockets are bound before anything loads, so a busy port fails at once with one line; the `listening` line on
stderr names the real ports (port 0 picks a free one), after the model is warm.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from typing import Any

from prosemc.errors import InputError
from prosemc.progress import note
from prosemc.serve.app import ServerConfig, build_app, configure_logging
from prosemc.serve.cloud import CloudModel

KEEP_ALIVE_S = 75  # longer than common load balancers' idle timeouts (60 s), as their docs advise


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; InputError naming the fix when that is impossible."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted sockets inherit it: without it Nagle held each reply's body a round trip behind its headers
        # (a GET took 0.4 s instead of 0.2 s over a 200 ms link)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError as error:
        raise InputError(f"cannot listen on {host}:{port} ({error.strerror or error}); choose another port "
                         "or address") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def run(config: ServerConfig, host: str, port: int, nc_port: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    from prosemc.serve import netcat

    configure_logging()
    http_sock = bind(host, port)
    nc_sock = bind(host, nc_port) if nc_port is not None else None
    started = time.perf_counter()
    cloud = CloudModel(config.model, llm=config.llm)
    warm_s = cloud.warm() if config.warm else 0.0
    app = build_app(config, cloud)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_keep_alive=KEEP_ALIVE_S))

    async def main() -> None:
        side = await netcat.start(config, cloud, nc_sock) if nc_sock is not None else None
        extra = f", netcat on port {nc_sock.getsockname()[1]}" if nc_sock is not None else ""
        auth = ", bearer token required" if config.token else ""
        note(f"prosemc: serving {cloud.model_id}, listening on {url_of(http_sock)}{extra}{auth} "
             f"(ready in {time.perf_counter() - started:.1f} s, warm-up {warm_s:.1f} s)")
        try:
            await server.serve(sockets=[http_sock])
        finally:
            if side is not None:
                side.close()

    try:
        asyncio.run(main())
    finally:
        cloud.close()


def run_ray(config: ServerConfig, host: str, port: int, replicas: int, address: str | None = None,
            block: bool = True) -> Any:
    """The same app as a Ray Serve deployment of `replicas` replicas behind Ray's HTTP proxy on host:port.

    address: an existing cluster ("auto", "ray://head:10001"); None starts a local Ray instance.
    """
    try:
        import ray
        from ray import serve
    except ImportError:
        raise InputError("Ray Serve is not installed; install the cluster extra: pip install 'prosemc[cluster]'") from None

    def build() -> Any:  # runs inside every replica
        configure_logging()
        return build_app(config)

    class ProsemcReplica:
        """One replica: the app with its own warm model."""

    deployment = serve.deployment(name="prosemc", num_replicas=replicas)(serve.ingress(build)(ProsemcReplica))
    ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             **({} if address else {"num_cpus": max(replicas, 2), "object_store_memory": 100 << 20}))
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(deployment.bind(), name="prosemc", route_prefix="/")
    note(f"prosemc: serving {config.model} on Ray Serve, {replicas} replicas, listening on http://{host}:{port}")
    if block:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:  # a local Ray instance goes with us (SIGINT or SIGTERM)
            serve.shutdown()
            ray.shutdown()
    return handle
