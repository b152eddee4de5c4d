"""A loopback NDIF endpoint for nnsight's real ``RemoteBackend`` (blocking mode), on 127.0.0.1 only.

    python loopback_ndif.py --port-file F --log L [--deployment NAME[=FOLDER]]... [--local-trace MOD:FN --local-out DIR]

What it does (the parts of NDIF's wire protocol that nnsight's client speaks, see ``RemoteBackend``):
  * ``GET /<name>/subscribe`` upgrades to a websocket and sends ``{"session_id": ...}``;
  * ``POST /<name>/request`` (multipart: ``data`` = ``RequestModel.metadata()``, ``blob`` = the payload) answers
    RECEIVED, then a single worker thread runs the request the NDIF way (:func:`ndif_like.run_request`) and
    pushes QUEUED, DISPATCHED, RUNNING, then COMPLETED with the result blob on the websocket (binary frame, as
    NDIF does for small results) or ERROR with the full traceback, as NDIF does;
  * deployment ``<name>`` serves the model named by the request's model key, loaded once with
    ``Remotable.from_model_key(key, dispatch=True)``; ``--deployment NAME=FOLDER`` serves FOLDER under the key's
    repo id instead (a server whose copy of the model differs);
  * after a request ran, ``--local-trace`` runs the same trace function in-process on the same model (no remote)
    and saves its values to ``--local-out/<name>.pt``;
  * every step is appended to the JSON-lines ``--log``.
What it does not do: authentication, queues, object storage and presigned URLs, non-blocking polling
(``/response/<id>``), compression negotiation beyond the request's ``compress`` flag, sandboxing, multiple
workers, model eviction, version gating.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import json
import os
import queue
import re
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- a minimal RFC 6455 websocket (server side) -------------------------------------------------------------
class WebSocket:
    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.rfile, self.wfile = handler.rfile, handler.wfile
        self.lock = threading.Lock()
        self.closed = False

    def send(self, payload: bytes | str) -> None:
        opcode = 0x1 if isinstance(payload, str) else 0x2
        data = payload.encode() if isinstance(payload, str) else payload
        header = bytearray([0x80 | opcode])
        if len(data) < 126:
            header.append(len(data))
        elif len(data) < 1 << 16:
            header.append(126)
            header += len(data).to_bytes(2, "big")
        else:
            header.append(127)
            header += len(data).to_bytes(8, "big")
        with self.lock:
            if not self.closed:
                self.wfile.write(bytes(header) + data)
                self.wfile.flush()

    def receive(self) -> tuple[int, bytes] | None:
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(self.rfile.read(2), "big")
        elif length == 127:
            length = int.from_bytes(self.rfile.read(8), "big")
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
        return opcode, data


# -- the server ----------------------------------------------------------------------------------------------
class Loopback:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.substitutes = dict(d.split("=", 1) if "=" in d else (d, "") for d in args.deployment)
        self.models: dict[tuple[str, str], Any] = {}
        self.sessions: dict[str, WebSocket] = {}
        self.jobs: "queue.Queue[tuple[str, dict, bytes, str]]" = queue.Queue()
        self.log_lock = threading.Lock()
        threading.Thread(target=self.worker, daemon=True).start()

    def log(self, **event: Any) -> None:
        with self.log_lock, open(self.args.log, "a") as handle:
            handle.write(json.dumps({"time": time.time(), **event}) + "\n")

    def model(self, name: str, model_key: str) -> Any:
        if (name, model_key) not in self.models:
            from nnsight.modeling.mixins.remotable import Remotable

            key = model_key
            folder = self.substitutes.get(name)
            if folder:
                import_path, _, suffix = model_key.partition(":")
                key = f"{import_path}:{json.dumps({**json.loads(suffix), 'repo_id': folder})}"
            model = Remotable.from_model_key(key, dispatch=True)
            self.models[(name, model_key)] = model
            import hybridload

            self.log(event="loaded", deployment=name, key=key, digest=hybridload.signature(model).digest,
                     kernels=bound_kernels(model._module))
        return self.models[(name, model_key)]

    def worker(self) -> None:
        from nnsight.schema.response import ResponseModel, Status

        from ndif_like import result_bytes, run_request

        while True:
            name, request, blob, job = self.jobs.get()
            socket = self.sessions.get(request.get("session_id", ""))

            def push(response: ResponseModel, binary: bool = False) -> None:
                if socket is not None:
                    socket.send(response.pickle() if binary else response.model_dump_json())

            for status in (Status.QUEUED, Status.DISPATCHED, Status.RUNNING):  # NDIF's statuses after RECEIVED
                push(ResponseModel(id=job, status=status, description=status.name.lower()))
            env = request.get("env") or {}
            try:
                model = self.model(name, request["model_key"])
                self.log(event="request", deployment=name, env_digest=(env.get("hybridload") or {}).get("digest"))
                saved = run_request(model, env, blob, compress=bool(request.get("compress")))
                self.log(event="executed", deployment=name, saved=sorted(saved))
                if self.args.local_trace:
                    self.local_trace(name, model)
                data = result_bytes(saved, bool(request.get("compress")))
                push(ResponseModel(id=job, status=Status.COMPLETED, data=data), binary=True)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the client, as NDIF does
                self.log(event="refused", deployment=name, error_type=type(exc).__name__, error=str(exc),
                         traceback=traceback.format_exc())
                # NDIF sends the full traceback of a failed request (its model actor's format_error)
                push(ResponseModel(id=job, status=Status.ERROR, description="".join(traceback.format_exception(exc))))

    def local_trace(self, name: str, model: Any) -> None:
        import torch

        module_name, _, function = self.args.local_trace.partition(":")
        values = getattr(importlib.import_module(module_name), function)(model)
        out = Path(self.args.local_out) / f"{name}.pt"
        torch.save({k: v.detach().cpu() for k, v in values.items()}, out)
        self.log(event="local_trace", deployment=name, out=str(out))


def bound_kernels(module: Any) -> dict[str, str]:
    """Names in the model's remote-code module bound to a kernel package's object: name -> module or 'stand-in'."""
    from hybridload.shim.standins import is_stand_in

    namespace = type(module).forward.__globals__
    kernel_modules = {n: m for n, m in sys.modules.items() if n.split(".")[0] in ("mamba_ssm", "causal_conv1d")}
    found = {}
    for name, value in namespace.items():
        if name.startswith("__") or not callable(value) or isinstance(value, type(sys)):
            continue
        if is_stand_in(value):
            found[name] = "stand-in"
            continue
        for module_name, kernel_module in sorted(kernel_modules.items()):
            if getattr(kernel_module, name, None) is value:
                found[name] = module_name
                break
    return found


def make_handler(server: Loopback) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            if not self.path.endswith("/subscribe") or self.headers.get("Upgrade", "").lower() != "websocket":
                self.send_error(404)
                return
            accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + _GUID).encode()).digest())
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept.decode())
            self.end_headers()
            self.close_connection = True
            socket = WebSocket(self)
            session = uuid.uuid4().hex
            server.sessions[session] = socket
            socket.send(json.dumps({"session_id": session}))
            try:
                while True:
                    frame = socket.receive()
                    if frame is None or frame[0] == 0x8:
                        break
            finally:
                with socket.lock:
                    socket.closed = True
                server.sessions.pop(session, None)

        def do_POST(self) -> None:  # noqa: N802
            from nnsight.schema.response import ResponseModel, Status

            name = self.path.strip("/").rpartition("/")[0]
            if not self.path.endswith("/request") or name not in server.substitutes:
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers["Content-Length"]))
            parts = _multipart(self.headers["Content-Type"], body)
            request = json.loads(parts["data"])
            job = uuid.uuid4().hex
            server.jobs.put((name, request, parts["blob"], job))
            answer = ResponseModel(id=job, status=Status.RECEIVED, description="received").model_dump_json().encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()  # type: ignore[union-attr]
    parts: dict[str, bytes] = {}
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, content = part.partition(b"\r\n\r\n")
        match = re.search(rb'name="([^"]+)"', head)
        if match:
            parts[match.group(1).decode()] = content[:-2] if content.endswith(b"\r\n") else content
    return parts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--deployment", action="append", default=[])
    parser.add_argument("--local-trace", default="")
    parser.add_argument("--local-out", default="")
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()

    import nnsight  # noqa: F401 - nnsight first, hybridload second: the patches land on an imported nnsight
    import hybridload

    assert hybridload.is_installed()
    server = Loopback(args)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(server))
    httpd.daemon_threads = True
    threading.Timer(args.lifetime, lambda: os._exit(3)).start()  # never outlive a crashed test
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(httpd.server_address[1]))
    tmp.rename(args.port_file)
    server.log(event="listening", port=httpd.server_address[1])
    httpd.serve_forever()


if __name__ == "__main__":
    main()
