"""The emulator's HTTP server: a stdlib ThreadingHTTPServer speaking bedrock-runtime to real botocore.

Order of checks per request mirrors the service: SigV4 -> route -> model availability in the
region -> body validation -> injected fault -> quota -> (latency) -> answer. Every response, error
or not, carries `x-amzn-RequestId` and the marker `x-migbench-emulated: 1`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from migbench.catalog import load_model, load_packaged
from migbench.emulator import batch as batch_api
from migbench.emulator import control as control_plane
from migbench.emulator import converse_extras as CX
from migbench.emulator import eventstream as ES
from migbench.emulator import protocol as P
from migbench.emulator import textract as textract_api
from migbench.emulator.faults import ERROR_FAULTS, STREAM_FAULTS, FaultInjector, FaultPlan, fault_error
from migbench.emulator.quota import QuotaBook
from migbench.emulator.responders import NotFoundResponder, Responder, answer_for_tool
from migbench.emulator.sigv4 import AuthPolicy, verify
from pydantic import BaseModel, Field, model_validator

log = logging.getLogger(__name__)
EMULATED_HEADER = "x-migbench-emulated"


# --- configuration (harness/data/emulator.yaml) -------------------------------------------------

class ModelEntry(BaseModel):
    family: Literal["nova", "anthropic"]
    kind: Literal["base", "profile"] = "base"
    inputs: list[Literal["text", "image"]] = ["text", "image"]
    on_demand: bool = True  # False: the base id cannot be invoked on demand (needs a profile)
    access: bool = True  # False: AccessDeniedException (model access not granted)
    verified: bool = False
    source: str = ""
    destinations: list[str] = []
    foundation_model: str | None = None  # a profile's model (default: its id without the prefix)
    quota_model_name: str | None = None  # the model's name in Service Quotas quota names
    tokens_per_minute: int | None = None
    requests_per_minute: int | None = None


class RegionCatalog(BaseModel):
    models: dict[str, ModelEntry]


class AuthConfig(BaseModel):
    credentials: dict[str, str] = {"testing": "testing"}
    any_key: bool = False
    max_clock_skew_s: float | None = 300


class LimitsConfig(BaseModel):
    max_image_side_px: int = Field(8000, gt=0)
    max_payload_bytes: int = Field(25 * 1024 * 1024, gt=0)


class LatencyConfig(BaseModel):
    distribution: Literal["fixed", "uniform", "lognormal"] = "fixed"
    fixed_s: float = Field(0.0, ge=0)
    min_s: float = Field(0.5, ge=0)
    max_s: float = Field(2.0, ge=0)
    median_s: float = Field(1.5, gt=0)
    sigma: float = Field(0.4, ge=0)
    per_output_token_s: float = Field(0.0, ge=0)
    # Streamed answers: the sampled latency passes before the first text delta, then this many
    # seconds between deltas, so a client sees its first token before the end of the answer.
    stream_delta_s: float = Field(0.01, ge=0)
    stream_pieces: int = Field(6, ge=1)
    time_scale: float = Field(1.0, ge=0)
    seed: int | None = 0

    @model_validator(mode="after")
    def _ordered(self) -> LatencyConfig:
        if self.min_s > self.max_s:
            raise ValueError(f"latency min_s {self.min_s} > max_s {self.max_s}")
        return self


class QuotaConfig(BaseModel):
    window_s: float = Field(60.0, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    requests_per_minute: int | None = Field(None, gt=0)
    reserve_max_tokens: bool = True
    default_max_tokens: int = Field(1024, gt=0)


class FaultConfig(BaseModel):
    rates: dict[str, float] = {}
    seed: int | None = 0
    slow_s: float = Field(5.0, ge=0)
    trickle_s: float = Field(1.0, ge=0)
    retry_after: str | None = None

    def plan(self) -> FaultPlan:
        return FaultPlan(rates=dict(self.rates), seed=self.seed, slow_s=self.slow_s, trickle_s=self.trickle_s,
                         retry_after=self.retry_after)


class EmulatorConfig(BaseModel):
    region: str = "ap-southeast-2"
    record_limit: int = Field(200, ge=0)
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    latency: LatencyConfig = LatencyConfig()
    quota: QuotaConfig = QuotaConfig()
    faults: FaultConfig = FaultConfig()
    control: control_plane.ControlConfig = control_plane.ControlConfig()
    regions: dict[str, RegionCatalog]

    @model_validator(mode="after")
    def _checks(self) -> EmulatorConfig:
        if self.region not in self.regions:
            raise ValueError(f"region {self.region!r} has no model catalog; known: {sorted(self.regions)}")
        self.faults.plan()  # unknown fault kinds / bad rates fail at load
        return self

    def models(self) -> dict[str, ModelEntry]:
        return self.regions[self.region].models


def load_config(path: str | Path | None = None, **overrides: Any) -> EmulatorConfig:
    """The packaged emulator.yaml (or a user file), with top-level fields overridden."""
    cfg = load_model(EmulatorConfig, path) if path else load_packaged(EmulatorConfig, "emulator.yaml")
    cfg = cfg.model_copy(deep=True)
    return cfg.model_copy(update=overrides) if overrides else cfg


# --- statistics ---------------------------------------------------------------------------------

class EmulatorStats:
    """Counters and a bounded record of the requests seen (decoded, without image bytes)."""

    def __init__(self, record_limit: int = 200):
        self._lock = threading.Lock()
        self.requests = 0
        self.throttled = 0
        self.by_operation: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_error: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=record_limit)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests += 1
            self.by_operation[entry.get("operation") or "unknown"] += 1
            self.by_status[entry["status"]] += 1
            if entry.get("error"):
                self.by_error[entry["error"]] += 1
                if entry["error"] == "ThrottlingException":
                    self.throttled += 1
            if entry.get("fault") and entry["fault"] != "ok":
                self.faults[entry["fault"]] += 1
            self.recent.append(entry)

    @property
    def last(self) -> dict[str, Any] | None:
        with self._lock:
            return self.recent[-1] if self.recent else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "throttled": self.throttled,
                    "by_operation": dict(self.by_operation), "by_status": dict(self.by_status),
                    "by_error": dict(self.by_error), "faults": dict(self.faults), "recent": list(self.recent)}


# --- the service --------------------------------------------------------------------------------

class _Reset(Exception):
    """Close the connection without answering."""


class EmulatedBedrock:
    """State shared by the handler threads: config, auth, quotas, faults, responder, stats."""

    def __init__(self, config: EmulatorConfig, responder: Responder | None = None):
        self.config = config
        self.responder: Responder = responder or NotFoundResponder()
        self.policy = AuthPolicy(region=config.region, credentials=dict(config.auth.credentials),
                                 any_key=config.auth.any_key, max_skew_s=config.auth.max_clock_skew_s)
        self.limits = P.Limits(config.limits.max_image_side_px, config.limits.max_payload_bytes)
        self.quotas = QuotaBook(self._quota_limits, config.quota.window_s)
        self.faults = FaultInjector(config.faults.plan())
        self.stats = EmulatorStats(config.record_limit)
        self.prompt_cache = CX.PromptCache()
        self.stopping = threading.Event()
        self._rng = random.Random(config.latency.seed)
        self._rng_lock = threading.Lock()

    def _quota_limits(self, model_id: str) -> tuple[int | None, int | None]:
        entry = self.config.models().get(model_id)
        q = self.config.quota
        tpm = entry.tokens_per_minute if entry and entry.tokens_per_minute else q.tokens_per_minute
        rpm = entry.requests_per_minute if entry and entry.requests_per_minute else q.requests_per_minute
        return tpm, rpm

    def sample_latency(self, output_tokens: int) -> float:
        lat = self.config.latency
        with self._rng_lock:
            if lat.distribution == "uniform":
                base = self._rng.uniform(lat.min_s, lat.max_s)
            elif lat.distribution == "lognormal":
                base = self._rng.lognormvariate(math.log(lat.median_s), lat.sigma)
            else:
                base = lat.fixed_s
        return (base + lat.per_output_token_s * output_tokens) * lat.time_scale

    @staticmethod
    def _converse_extras(op: str, body: bytes) -> tuple[CX.ToolAsk | None, tuple[str, int] | None, int]:
        """A Converse request's tool offer (validated), cached prefix and tool-definition tokens."""
        if op != "Converse" or (b'"toolConfig"' not in body and b'"cachePoint"' not in body):
            return None, None, 0
        data = P.load_json(body)
        return CX.read_tool_config(data), CX.cache_prefix(data), CX.tool_tokens(data)

    def resolve_model(self, model_id: str) -> ModelEntry:
        mid = P.base_model_id(model_id, self.config.region)
        entry = self.config.models().get(mid)
        if entry is None:
            raise P.ApiError("ValidationException", P.MSG_INVALID_MODEL)
        if entry.kind == "base" and not entry.on_demand:
            raise P.ApiError("ValidationException", P.MSG_ON_DEMAND.format(model=mid))
        if not entry.access:
            raise P.ApiError("AccessDeniedException", P.MSG_NO_ACCESS)
        return entry

    def precheck(self, method: str, raw_path: str, headers: Any) -> int:
        """What the headers alone can refuse, before any of the body is read: a missing or
        malformed signature, a wrong scope or date, an unknown key (403/400), a Content-Length
        that is not a size or is over the payload limit (400/413). Returns the declared size.

        A signature mismatch is left to `handle`: the signature covers the body, not read yet."""
        if textract_api.is_textract(raw_path, headers):  # AnalyzeExpense & co., in their own protocol
            return textract_api.precheck(self, method, raw_path, headers)
        if method == "POST":
            try:
                verify(method, raw_path, headers, b"", control_plane.policy_for(self.policy, headers))
            except P.ApiError as err:
                if err.message != P.MSG_BAD_SIGNATURE:
                    raise
        raw = headers.get("Content-Length")
        try:
            n = int(raw) if raw is not None else 0
        except ValueError:
            raise P.ApiError("ValidationException", f"Content-Length {raw!r} is not a number of bytes.") from None
        if n < 0:
            raise P.ApiError("ValidationException", f"Content-Length {n} is negative.")
        if n > self.limits.max_payload_bytes:
            raise P.ApiError("ValidationException",
                             P.MSG_PAYLOAD_TOO_BIG.format(n=n, limit=self.limits.max_payload_bytes), 413)
        return n

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes,
               entry_out: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: (status, headers, body). Raises _Reset to drop the connection."""
        if textract_api.is_textract(raw_path, headers):
            return textract_api.handle(self, method, raw_path, headers, body, entry_out)
        if batch_api.is_batch(method, raw_path):  # CreateModelInvocationJob & co.
            return batch_api.handle(self, method, raw_path, headers, body, entry_out)
        if control_plane.is_control(method, raw_path, headers):  # GetInferenceProfile, ListServiceQuotas, ...
            return control_plane.handle(self, method, raw_path, headers, body, entry_out)
        if method != "POST":
            raise P.ApiError("UnknownOperationException", "", 404)
        verify(method, raw_path, headers, body, self.policy)
        streamed = ES.route(raw_path)  # ConverseStream / InvokeModelWithResponseStream: the same request
        op, model_id = streamed[1:] if streamed else P.route(raw_path)
        entry_out.update(operation=streamed[0] if streamed else op, model_id=model_id)
        model = self.resolve_model(model_id)
        req = P.parse_request(op, model_id, model.family, body, self.limits)
        entry_out["request"] = req.summary()
        if req.images and "image" not in model.inputs:
            raise P.ApiError("ValidationException", P.MSG_UNSUPPORTED_IMAGE)
        ask, prefix, tool_tokens = self._converse_extras(op, body)

        fault = self.faults.next_fault()
        entry_out["fault"] = fault
        if fault in ERROR_FAULTS:
            raise fault_error(fault)
        if fault == "reset":
            raise _Reset()
        if fault == "echo_token":
            token = headers.get("X-Amz-Security-Token") or "(no token)"
            raise P.ApiError("InternalServerException", f"Request failed for security token {token}.")
        started = time.monotonic()
        if fault == "slow":
            self.stopping.wait(self.faults.plan.slow_s)

        input_tokens = P.estimate_input_tokens(req) + tool_tokens
        reserve = input_tokens
        if self.config.quota.reserve_max_tokens:
            reserve += req.max_tokens or self.config.quota.default_max_tokens
        quota = self.quotas.for_model(P.base_model_id(model_id, self.config.region))
        ticket = quota.admit(reserve)
        if isinstance(ticket, str):
            raise P.ApiError("ThrottlingException", ticket)
        try:
            text = answer_for_tool(self.responder, req) if ask else self.responder(req)
        except P.ApiError:
            quota.settle(ticket, 0)
            raise
        except Exception:
            quota.settle(ticket, 0)
            log.exception("emulator responder failed")
            raise P.ApiError("InternalServerException", "The responder failed; see the emulator log.") from None
        text, stop = P.truncate_to_max_tokens(text, req.max_tokens)
        usage = P.Usage(input_tokens, max(P.estimate_text_tokens(text), 1))
        quota.settle(ticket, usage.total_tokens)
        if streamed:  # the same answer, tool call and cache counts included, as events
            entry_out.update(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, reply=text)
            answer = (self._converse_answer(text, usage, 0, stop, ask, prefix, model_id, input_tokens,
                                            entry_out["request_id"]) if op == "Converse" else None)
            return 200, self._stream_headers(op), self._stream(op, req, model_id, text, usage, stop, started,
                                                               entry_out["request_id"], fault, answer)
        self.stopping.wait(self.sample_latency(usage.output_tokens))
        latency_ms = int((time.monotonic() - started) * 1000)
        entry_out.update(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, reply=text)

        hdrs = {"Content-Type": "application/json"}
        if op == "Converse":
            payload = self._converse_answer(text, usage, latency_ms, stop, ask, prefix, model_id, input_tokens,
                                            entry_out["request_id"])
            if fault == "no_output":
                payload.pop("output")
        else:
            rid = entry_out["request_id"]
            payload = (P.anthropic_invoke_response(text, usage, model_id, rid, stop) if req.body_kind == "anthropic"
                       else P.nova_invoke_response(text, usage, stop))
            if fault == "no_output":
                payload.pop("content" if req.body_kind == "anthropic" else "output")
            hdrs.update({"X-Amzn-Bedrock-Input-Token-Count": str(usage.input_tokens),
                         "X-Amzn-Bedrock-Output-Token-Count": str(usage.output_tokens),
                         "X-Amzn-Bedrock-Invocation-Latency": str(latency_ms)})
        return 200, hdrs, json.dumps(payload).encode()


    def _converse_answer(self, text: str, usage: P.Usage, latency_ms: int, stop: str, ask: CX.ToolAsk | None,
                         prefix: tuple[str, int] | None, model_id: str, input_tokens: int,
                         request_id: str) -> dict[str, Any]:
        """A Converse answer: the text, or the asked tool's call, with the prompt cache's counts."""
        payload = P.converse_response(text, usage, latency_ms, stop)
        tool = CX.tool_answer(text, ask, request_id) if ask and stop != "max_tokens" else None
        cache = self.prompt_cache.use(model_id, prefix[0], min(prefix[1], input_tokens)) if prefix else None
        return CX.apply_extras(payload, tool=tool, cache=cache)

    def _stream_headers(self, op: str) -> dict[str, str]:
        hdrs = {"Content-Type": ES.CONTENT_TYPE}
        if op == "InvokeModel":
            hdrs["X-Amzn-Bedrock-Content-Type"] = "application/json"
        return hdrs

    def _stream(self, op: str, req: P.ParsedRequest, model_id: str, text: str, usage: P.Usage, stop: str,
                started: float, request_id: str, fault: str, answer: dict[str, Any] | None) -> Iterator[bytes]:
        """The answer's frames, produced as they are due (the handler writes each as a chunk)."""
        lat = self.config.latency
        kind = "converse" if op == "Converse" else req.body_kind
        return ES.stream_frames(kind, text, usage, stop, model=model_id, request_id=request_id,
                                first_token_s=self.sample_latency(usage.output_tokens),
                                delta_s=lat.stream_delta_s * lat.time_scale, pieces=lat.stream_pieces,
                                wait=self.stopping.wait, clock=time.monotonic, started=started,
                                fault=STREAM_FAULTS.get(fault, False), answer=answer)


def _error_reply(err: P.ApiError) -> tuple[dict[str, str], bytes]:
    """An error's headers and body: in the protocol of its API (Textract's CBOR/JSON 1.1 errors
    render themselves), else bedrock's rest-json."""
    reply = getattr(err, "reply", None)
    return reply() if callable(reply) else (P.error_headers(err.code), P.error_body(err.message))


# A refused request's body up to this size is read and discarded (never kept); beyond it the
# connection is closed unread: reading a declared 10^12 bytes would take hours.
_DRAIN_LIMIT = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore pools connections through urllib3
    disable_nagle_algorithm = True  # else ~40 ms per small response (delayed ACK)
    timeout = 120  # idle keep-alive connections release their thread
    server_version = "migbench-emulator"
    service: EmulatedBedrock  # set on a per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status: int, headers: dict[str, str], body: bytes | Iterator[bytes], request_id: str,
              fault: str | None = None) -> None:
        if not isinstance(body, (bytes, bytearray)):
            self._send_stream(status, headers, body, request_id)
            # A client drops a stream that broke off mid-answer (its last bytes unread): close our side
            # too rather than wait on a connection it has reset.
            self.close_connection = fault in STREAM_FAULTS or self.close_connection
            return
        if fault == "empty_body":
            body = b""
        elif fault == "html_body":
            headers = {**headers, "Content-Type": "text/html"}
            body = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header(EMULATED_HEADER, "1")
        self.send_header("Content-Length", str(len(body)))
        if fault in ERROR_FAULTS and self.service.faults.plan.retry_after is not None:
            self.send_header("Retry-After", self.service.faults.plan.retry_after)
        self.end_headers()
        if fault == "truncated_body":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            # The rest never comes: an orderly close (FIN, not the "reset" fault's RST) after fewer
            # bytes than Content-Length promised.
            self.close_connection = True
            return
        if fault == "trickle":
            self.wfile.flush()
            for i in range(len(body)):
                if self.service.stopping.wait(self.service.faults.plan.trickle_s):
                    break
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
            return
        self.wfile.write(body)

    def _send_stream(self, status: int, headers: dict[str, str], frames: Iterator[bytes], request_id: str) -> None:
        """An event stream: each frame as one HTTP/1.1 chunk, flushed as soon as it is due."""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header(EMULATED_HEADER, "1")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for frame in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _dispatch(self) -> None:
        request_id = str(uuid.uuid4())
        entry: dict[str, Any] = {"request_id": request_id, "method": self.command, "path": self.path,
                                 "client_port": self.client_address[1]}
        try:
            self.service.precheck(self.command, self.path, self.headers)
        except P.ApiError as err:
            self._refuse_unread(err, entry, request_id)
            return
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        try:
            try:
                status, headers, out = self.service.handle(self.command, self.path, self.headers, body, entry)
            except P.ApiError as err:
                status, (headers, out) = err.status, _error_reply(err)
                entry.update(error=err.code, message=err.message)
            entry["status"] = status
            self.service.stats.record(entry)
            fault = entry.get("fault")
            self._send(status, headers, out, request_id, fault if status == 200 or fault in ERROR_FAULTS else None)
        except _Reset:
            entry.update(status=0, error="ConnectionReset")
            self.service.stats.record(entry)
            self._reset()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (read timeout): nothing to answer

    def _refuse_unread(self, err: P.ApiError, entry: dict[str, Any], request_id: str) -> None:
        """Answer a precheck refusal. The body is never buffered: a small one is discarded in
        chunks so the client, which sends before it reads, sees the answer and the connection
        stays usable; a larger one is not read at all and the connection closes after the answer."""
        entry.update(status=err.status, error=err.code, message=err.message)
        self.service.stats.record(entry)
        headers, reply = _error_reply(err)
        try:
            declared = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            declared = -1
        if 0 <= declared <= _DRAIN_LIMIT:
            try:
                while declared > 0:
                    chunk = self.rfile.read(min(declared, 65536))
                    if not chunk:
                        break
                    declared -= len(chunk)
            except OSError:
                declared = -1
        if declared != 0:
            self.close_connection = True
            headers = {**headers, "Connection": "close"}
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._send(err.status, headers, reply, request_id)

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST instead of FIN: the client sees a reset connection.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    do_POST = _dispatch
    do_GET = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # shutting down must not wait for stalled ("slow") requests
    request_queue_size = 512
    allow_reuse_address = True


class Emulator:
    """A running emulator: `url`, `stats`, `set_faults`, `set_responder`, `stop`."""

    def __init__(self, config: EmulatorConfig | None = None, responder: Responder | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.config = config or load_config()
        self.service = EmulatedBedrock(self.config, responder)
        handler = type("Handler", (_Handler,), {"service": self.service})
        self._server = _Server((host, port), handler)
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def region(self) -> str:
        return self.config.region

    @property
    def stats(self) -> EmulatorStats:
        return self.service.stats

    def set_faults(self, plan: FaultPlan | None = None, **kwargs: Any) -> None:
        """Replace the fault plan: `set_faults(FaultPlan(...))` or `set_faults(rates=..., script=...)`."""
        self.service.faults.set_plan(plan if plan is not None else FaultPlan(**kwargs))

    def set_responder(self, responder: Responder) -> None:
        self.service.responder = responder

    def reset_quotas(self) -> None:
        self.service.quotas.reset()

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="bedrock-emulator", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve in the calling thread until interrupted."""
        self._server.serve_forever()

    def stop(self) -> None:
        self.service.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:  # noqa: PYI034 (no typing_extensions import for 3.10)
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def run_emulator(config: EmulatorConfig | None = None, responder: Responder | None = None, *,
                 host: str = "127.0.0.1", port: int = 0) -> Iterator[Emulator]:
    """Start an emulator on a free port (port 0) for the duration of a with-block."""
    emu = Emulator(config, responder, host, port).start()
    try:
        yield emu
    finally:
        emu.stop()


# --- command line -------------------------------------------------------------------------------

def responder_from_spec(spec: str | None) -> Responder:
    """`not-found` (default) | `scripted:TEXT` | `ground-truth:DATASET_DIR[,error_rate=R][,seed=N][,style=kv|json]`."""
    if not spec or spec == "not-found":
        return NotFoundResponder()
    kind, _, arg = spec.partition(":")
    if kind == "scripted" and arg:
        from migbench.emulator.responders import ScriptedResponder

        return ScriptedResponder([arg.replace("\\n", "\n")])
    if kind == "ground-truth" and arg:
        from migbench.datasets import load_dataset
        from migbench.emulator.responders import GroundTruthResponder

        root, *opts = arg.split(",")
        kw: dict[str, Any] = {}
        for opt in opts:
            key, _, val = opt.partition("=")
            if key not in ("error_rate", "seed", "style"):
                raise ValueError(f"unknown ground-truth option {key!r} (error_rate, seed, style)")
            kw[key] = float(val) if key == "error_rate" else int(val) if key == "seed" else val
        return GroundTruthResponder(load_dataset(root), **kw)
    raise ValueError(f"unknown responder spec {spec!r}: not-found | scripted:TEXT | ground-truth:DIR[,opts]")


def serve_forever(host: str = "127.0.0.1", port: int = 8787, config: EmulatorConfig | str | Path | None = None,
                  responder: Responder | str | None = None, announce: Any = None) -> None:
    """Run the emulator in the foreground (for `migbench emulator`) until Ctrl-C."""
    cfg = config if isinstance(config, EmulatorConfig) else load_config(config)
    resp = responder if responder is not None and not isinstance(responder, str) else responder_from_spec(responder)
    emu = Emulator(cfg, resp, host, port)
    announce = announce or (lambda line: print(line, flush=True))  # flushed: callers read the URL from a pipe
    announce(f"{emu.url}  (emulated bedrock-runtime, region {cfg.region}; "
             f"AWS_ENDPOINT_URL_BEDROCK_RUNTIME={emu.url}; for the profile check and quota: "
             f"AWS_ENDPOINT_URL_BEDROCK={emu.url} AWS_ENDPOINT_URL_SERVICE_QUOTAS={emu.url})")
    try:
        emu.serve()
    except KeyboardInterrupt:
        pass
    finally:
        emu.service.stopping.set()
        emu._server.server_close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="migbench emulator", description="Local bedrock-runtime emulator (synthetic).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    ap.add_argument("--config", help="emulator YAML (default: packaged harness/data/emulator.yaml)")
    ap.add_argument("--responder", default="not-found", help=responder_from_spec.__doc__)
    args = ap.parse_args(argv)
    try:
        serve_forever(args.host, args.port, args.config, args.responder)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
