"""Amazon Bedrock backend: one Converse / InvokeModel attempt per `generate`, behind the residency guard.

Options (BackendConfig.options, from backends.yaml defaults, config or CLI):
  catalog_model   key of harness/data/bedrock_models.yaml (model id, vision, api, regions, facts)
  region          signing region. Explicit option, else ap-southeast-2. AWS_REGION / AWS_DEFAULT_REGION
                  are deliberately NOT used: a developer's shell default must not move a residency run.
  api             converse | invoke-nova | invoke-anthropic (default: the catalog's api_default)
  max_image_dim   downscale pages whose longer side exceeds this (default: the model limit, 8000)
  concurrency     harness threads; also the client's connection pool size
  read_timeout    seconds (default 300: long generations), connect_timeout (default 10)
  endpoint_url    else botocore applies AWS_ENDPOINT_URL_BEDROCK_RUNTIME itself; the guard judges either
  allow_loopback  allow 127.0.0.1/localhost/::1 endpoints (emulator); also MIGBENCH_ALLOW_LOOPBACK=1
  preflight_profile  auto | always | never: read an inference profile's destinations at preflight
  pdf_mode        document (Converse document block) | pages (render to images)
  profile         AWS named profile for the standard credential chain
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

from migbench.adapters import aws_common as aws
from migbench.adapters import bedrock_body as body
from migbench.adapters.bedrock_images import (
    ImagePrepError,
    estimate_request_image_tokens,
    prepare_images,
    render_pdf_pages,
)
from migbench.contracts import BackendConfig, BackendError, ErrorClass, Request, Response, SetupError
from migbench.residency import (
    ModelEntry,
    ResidencyError,
    ResidencyGuard,
    check_config,
    is_loopback,
    judge_inference_profile,
    load_model_catalog,
    load_policy,
    parse_arn,
    profile_prefix,
)

log = logging.getLogger("migbench.bedrock")

DEFAULT_REGION = "ap-southeast-2"
EMULATED_HEADER = aws.EMULATED_HEADER
APIS = ("converse", "invoke-nova", "invoke-anthropic")
_OPERATION = {"converse": "Converse", "invoke-nova": "InvokeModel", "invoke-anthropic": "InvokeModel"}


class BedrockBackend(aws.AwsBackend):
    service = "bedrock-runtime"
    family = "bedrock"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        catalog = load_model_catalog()
        key = config.get("catalog_model")
        if key is not None and key not in catalog.models:
            raise SetupError(f"catalog_model {key!r} is not in bedrock_models.yaml; known: {', '.join(catalog.models)}")
        entry: ModelEntry | None = catalog.models.get(key) if key else None
        if config.model and (entry is None or config.model != entry.model_id):
            entry = catalog.by_model_id(config.model)  # an explicit id wins; its facts only if catalogued
        if entry is None and not config.model:
            raise SetupError(f"backend {config.name!r}: set catalog_model or a model id")
        self.entry = entry
        self._model_id: str = config.model or entry.model_id  # type: ignore[union-attr]
        self.region: str = str(config.get("region") or DEFAULT_REGION)
        self.api: str = str(config.get("api") or (entry.api_default if entry else "converse"))
        if self.api not in APIS:
            raise SetupError(f"api must be one of {', '.join(APIS)}, got {self.api!r}")
        if entry is not None and self.api not in entry.apis:
            raise SetupError(f"{self._model_id} does not take api {self.api!r} (catalog: {', '.join(entry.apis)})")
        self.max_image_dim = int(config.get("max_image_dim")) if config.get("max_image_dim") else None
        self.read_timeout = float(config.get("read_timeout", 300))
        self.connect_timeout = float(config.get("connect_timeout", 10))
        self.endpoint_url: str | None = config.get("endpoint_url") or None
        self.allow_loopback = bool(config.get("allow_loopback")) or aws.env_flag(os.environ.get("MIGBENCH_ALLOW_LOOPBACK"))
        self.preflight_profile = str(config.get("preflight_profile", "auto"))
        if self.preflight_profile not in ("auto", "always", "never"):
            raise SetupError(f"preflight_profile must be auto, always or never, got {self.preflight_profile!r}")
        self.pdf_mode = str(config.get("pdf_mode", "document"))
        if self.pdf_mode not in ("document", "pages"):
            raise SetupError(f"pdf_mode must be document or pages, got {self.pdf_mode!r}")
        self.policy = load_policy()
        self.guard = ResidencyGuard(self.policy, allow_loopback=self.allow_loopback, catalog=catalog)
        self.emulated: bool | None = None  # known after the first answered call
        self.profile_check = "not run"
        self._client: Any = None
        self._session: Any = None
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if os.environ.get(var) and os.environ[var] != self.region:
                log.warning("%s=%s ignored: the bedrock region is %s (set the region option to change it)",
                            var, os.environ[var], self.region)

    # ------------------------------------------------------------ setup

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def endpoint(self) -> str:
        return self._get_client().meta.endpoint_url

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({
            "model": self.model_id, "catalog_model": self.config.get("catalog_model"), "region": self.region,
            "api": self.api, "endpoint": self.endpoint if self._client is not None else self.endpoint_url,
            "emulated": self.emulated, "profile_check": self.profile_check,
            "catalog_verified": self.entry.verified if self.entry else None,
            "unverified_facts": [f.claim for f in self.entry.facts if not f.verified] if self.entry else [],
            "max_image_dim": self.max_image_dim, "read_timeout": self.read_timeout,
        })
        return d

    def preflight(self) -> None:
        """Residency at config time (zero requests if refused), vision support, profile destinations."""
        client = self._get_client()
        check_config(self.region, client.meta.endpoint_url, self.model_id, policy=self.policy,
                     allow_loopback=self.allow_loopback, catalog=load_model_catalog())
        if self.entry is not None and not self.entry.vision:
            raise SetupError(f"{self.model_id} is text-only (catalog): it cannot read document images")
        aws.require_credentials(self._session, self.name)
        self._check_profile(client.meta.endpoint_url)

    def _is_profile(self) -> bool:
        arn = parse_arn(self.model_id)
        if arn is not None:
            return arn.resource_type in ("inference-profile", "application-inference-profile")
        return (self.entry is not None and self.entry.kind == "profile") or \
            profile_prefix(self.model_id) in self.policy.allowed_profile_prefixes

    def _check_profile(self, endpoint: str) -> None:
        mode = self.preflight_profile
        if mode == "never":
            self.profile_check = "not checked: preflight_profile=never"
            return
        if not self._is_profile():
            self.profile_check = "not applicable: base model id"
            return
        why_not = None
        if is_loopback(aws.host_of(endpoint), self.policy):
            why_not = "endpoint is loopback (emulator)"
        elif not aws.has_credentials(self._session):
            why_not = "no AWS credentials"
        if why_not:
            if mode == "always":
                raise SetupError(f"preflight_profile=always but the profile cannot be checked: {why_not}")
            self.profile_check = f"not checked: {why_not}"
            log.warning("inference profile %s destinations not checked: %s", self.model_id, why_not)
            return
        ctl = self.guard.attach(aws.make_client(
            "bedrock", region=self.region, endpoint_url=self.config.get("control_endpoint_url"),
            read_timeout=30, connect_timeout=self.connect_timeout, session=self._session))
        try:
            resp = ctl.get_inference_profile(inferenceProfileIdentifier=self.model_id)
        except Exception as exc:  # noqa: BLE001 - refused, denied or unreachable: stop only when required
            decision = self.guard.take_last()
            self._audit("bedrock", "GetInferenceProfile", None, decision, status=aws.http_status(exc),
                        request_id=aws.request_id(exc), error_class=aws.classify_aws_error(exc))
            if mode == "always" or isinstance(exc, ResidencyError):
                raise SetupError(f"inference profile check failed: {aws.error_code(exc) or type(exc).__name__}: "
                                 f"{exc}") from None
            self.profile_check = f"not checked: {aws.error_code(exc) or type(exc).__name__}"
            log.warning("inference profile %s destinations not checked: %s", self.model_id, exc)
            return
        finally:
            ctl.close()
        self._audit("bedrock", "GetInferenceProfile", None, self.guard.take_last(),
                    status=aws.http_status(resp) or 200, request_id=aws.request_id(resp))
        verdict = judge_inference_profile(resp, self.policy)
        if not verdict.ok:
            raise SetupError(f"residency: inference profile {self.model_id} refused: {verdict.reason}")
        self.profile_check = "verified: destinations " + ", ".join(verdict.destinations)

    # ------------------------------------------------------------ one attempt

    def _prepare(self, request: Request) -> tuple[list, bytes | None]:
        if self.entry is not None and not self.entry.vision and (request.images or request.pdf_bytes):
            raise BackendError(f"{self.model_id} is text-only: it cannot take images", ErrorClass.PERMANENT)
        document = None
        pages = list(request.images)
        if request.pdf_bytes is not None:
            if self.api == "converse" and self.pdf_mode == "document" and (self.entry is None or self.entry.documents) or self.api == "invoke-anthropic" and self.pdf_mode == "document":
                document = request.pdf_bytes
            else:
                pages += render_pdf_pages(request.pdf_bytes)
        reserve = len(request.prompt.encode()) + len((request.system or "").encode()) + \
            (len(document) * 4 // 3 if document else 0) + 4096
        return prepare_images(pages, max_dim=self.max_image_dim, reserve_bytes=reserve), document

    def _build(self, request: Request, prepared: list, document: bytes | None) -> dict[str, Any]:
        parts = [(p.data, p.format) for p in prepared]
        if self.api == "converse":
            return body.converse_request(self.model_id, request.prompt, parts, system=request.system,
                                         params=request.params, document=document, document_name_=request.doc_id)
        if self.api == "invoke-nova":
            return body.invoke_request(self.model_id, body.nova_invoke_body(
                request.prompt, parts, system=request.system, params=request.params))
        return body.invoke_request(self.model_id, body.anthropic_invoke_body(
            request.prompt, parts, system=request.system, params=request.params, document=document))

    def generate(self, request: Request) -> Response:
        with self._lock:
            self._attempts[request.doc_id] += 1
            attempt = self._attempts[request.doc_id]
        try:
            prepared, document = self._prepare(request)
        except ImagePrepError as exc:
            raise BackendError(f"image preparation failed: {exc}", ErrorClass.INPUT) from None
        kwargs = self._build(request, prepared, document)
        client = self._get_client()
        operation = _OPERATION[self.api]
        self.guard.take_last()  # clear any stale decision on this thread
        t0 = time.perf_counter()
        try:
            if self.api == "converse":
                raw = client.converse(**kwargs)
                parsed = body.parse_converse_response(raw)
            else:
                raw = client.invoke_model(**kwargs)
                payload = json.loads(raw["body"].read())
                headers = aws.response_headers(raw)
                parsed = (body.parse_nova_invoke_response(payload, headers) if self.api == "invoke-nova"
                          else body.parse_anthropic_invoke_response(payload, headers))
        except Exception as exc:
            latency = time.perf_counter() - t0
            error_class = self.classify(exc)
            decision = self.guard.take_last()
            self._audit("bedrock-runtime", operation, request.doc_id, decision, status=aws.http_status(exc),
                        request_id=aws.request_id(exc), attempt=attempt, error_class=error_class)
            self._note_emulated(aws.response_headers(exc))
            partial = Response(latency_s=latency, region=self.region, endpoint=decision.host if decision else None,
                               model_id=self.model_id, request_id=aws.request_id(exc), error_class=error_class,
                               error=_safe_message(exc), throttled=int(error_class is ErrorClass.THROTTLING))
            if isinstance(exc, BackendError):
                exc.response = partial
                raise
            raise BackendError(_safe_message(exc), error_class, retry_after_s=aws.retry_after_s(exc),
                               response=partial) from exc
        latency = time.perf_counter() - t0
        decision = self.guard.take_last()
        rid = aws.request_id(raw)
        self._audit("bedrock-runtime", operation, request.doc_id, decision, status=aws.http_status(raw) or 200,
                    request_id=rid, attempt=attempt)
        emulated = self._note_emulated(aws.response_headers(raw))
        return Response(
            text=parsed.text, input_tokens=parsed.input_tokens, output_tokens=parsed.output_tokens,
            latency_s=latency, server_latency_ms=parsed.server_latency_ms, region=self.region,
            endpoint=decision.host if decision else aws.host_of(client.meta.endpoint_url), model_id=self.model_id,
            request_id=rid, stop_reason=parsed.stop_reason,
            extra={"emulated": emulated, "api": self.api,
                   "images": [{"w": p.width, "h": p.height, "format": p.format, "converted": p.converted}
                              for p in prepared],
                   "document_block": document is not None,
                   "estimated_image_tokens": estimate_request_image_tokens(prepared)})

    # ------------------------------------------------------------ facts

    def _note_emulated(self, headers: dict[str, str]) -> bool:
        emulated = self.answered_by_emulator(headers)
        if headers:
            self.emulated = emulated
        return emulated

    def _audit(self, service: str, operation: str, doc_id: str | None, decision: Any, *, status: int | None,
               request_id: str | None, attempt: int = 1, error_class: ErrorClass | None = None) -> None:
        aws.record_attempt(
            self.audit, backend=self.name, service=service, operation=operation, model_id=self.model_id,
            doc_id=doc_id, decision=decision, region=self.region,
            host=aws.host_of(self._client.meta.endpoint_url) if self._client is not None else None,
            status=status, request_id=request_id, attempt=attempt, error_class=error_class)


def _safe_message(exc: BaseException) -> str:
    """One line naming the error; boto3 messages carry the code and the service's text, never keys."""
    code = aws.error_code(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text
