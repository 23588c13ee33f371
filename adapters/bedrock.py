"""Amazon Bedrock backend: one Converse / InvokeModel attempt per `generate`, behind the residency guard.

Options are `BedrockOptions` (below, plus the AWS ones in aws_common.AwsOptions): backends.yaml
defaults, then config or CLI (`-o KEY=VALUE`), validated when the backend is loaded.
Client setup, the bounded attempt, classification and audit facts are the AWS base's
(migbench.adapters.aws_common); this module builds the three request shapes and reads their answers.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from migbench.adapters import aws_common as aws
from migbench.adapters import bedrock_body as body
from migbench.adapters import bedrock_stream as streams
from migbench.contracts import (
    BackendConfig,
    BackendError,
    ErrorClass,
    ImageBudget,
    Request,
    Response,
    SetupError,
    UsageError,
)
from migbench.residency import (
    CATALOG_ENV,
    ModelEntry,
    ResidencyError,
    check_config,
    is_loopback,
    judge_inference_profile,
    load_model_catalog,
    parse_arn,
    profile_prefix,
)
from migbench.tokens import estimate_image_tokens
from pydantic import Field, model_validator

log = logging.getLogger("migbench.bedrock")

APIS = ("converse", "invoke-nova", "invoke-anthropic")
Api = Literal["converse", "invoke-nova", "invoke-anthropic"]
# Converse DocumentBlock: "Each document's size must be no more than 4.5 MB"
# (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_DocumentBlock.html).
MAX_DOCUMENT_BYTES = 4_500_000
_OPERATION = {"converse": "Converse", "invoke-nova": "InvokeModel", "invoke-anthropic": "InvokeModel"}
_STREAM_OPERATION = {"converse": "ConverseStream", "invoke-nova": "InvokeModelWithResponseStream",
                     "invoke-anthropic": "InvokeModelWithResponseStream"}


class BedrockOptions(aws.AwsOptions):
    catalog_model: str | None = Field(None, description=(
        "key of harness/data/bedrock_models.yaml (model id, vision, api, regions, facts)"))
    api: Api | None = Field(None, description="default: the catalog's api_default, else converse")
    preflight_profile: Literal["auto", "always", "never"] = Field("auto", description=(
        "read an inference profile's destinations (GetInferenceProfile) at preflight. auto: on every "
        "AWS run, skipped against a local endpoint; always: against a local endpoint too; never: skip. A "
        "real run whose destinations cannot be read stops, unless accept_unverified_profile=true"))
    accept_unverified_profile: bool = Field(False, description=(
        "run even though the profile's destinations could not be read (AccessDenied, unreachable); "
        "recorded on the run and shown in red by the report"))
    pdf_mode: Literal["document", "pages"] = Field(
        "document", description="document: the PDF as a document block where the API takes one; pages: images")
    control_endpoint_url: str | None = Field(None, description="bedrock control plane (GetInferenceProfile)")
    prompt_cache: bool = Field(False, description=(
        "Converse prompt caching: the instructions go before the pages, followed by a cachePoint, so "
        "every document of a type shares the cached prefix; cache read/write tokens are recorded and priced"))
    stream: bool = Field(False, description=(
        "ConverseStream / InvokeModelWithResponseStream instead of the one-shot call: the answer is the same, "
        "time to first token and output tokens per second are measured (migbench run --stream)"))

    @model_validator(mode="after")
    def _catalogued(self) -> BedrockOptions:
        known = load_model_catalog(self.model_catalog).models
        if self.catalog_model is not None and self.catalog_model not in known:
            raise ValueError(f"catalog_model {self.catalog_model!r} is not in the model catalog; "
                             f"known: {', '.join(known)}")
        return self


class BedrockBackend(aws.AwsBackend):
    service = "bedrock-runtime"
    family = "bedrock"
    Options = BedrockOptions
    input_form = "pdf-or-encoded"  # the PDF itself as a document block where image_budget().takes_pdf

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        opts: BedrockOptions = self.opts  # type: ignore[assignment]
        catalog = self.model_catalog
        key = opts.catalog_model
        entry: ModelEntry | None = catalog.models.get(key) if key else None
        if config.model and (entry is None or config.model != entry.model_id):
            entry = catalog.by_model_id(config.model)  # an explicit id wins; its facts only if catalogued
        if entry is None and not config.model:
            raise SetupError(f"backend {config.name!r}: set catalog_model or a model id")
        self.entry = entry
        self._model_id: str = config.model or entry.model_id  # type: ignore[union-attr]
        self.api: str = opts.api or (entry.api_default if entry else "converse")
        if entry is not None and self.api not in entry.apis:
            raise SetupError(f"{self._model_id} does not take api {self.api!r} (catalog: {', '.join(entry.apis)})")
        self.preflight_profile = opts.preflight_profile
        self.accept_unverified_profile = opts.accept_unverified_profile
        self.pdf_mode = opts.pdf_mode
        self.prompt_cache = opts.prompt_cache
        if self.prompt_cache and self.api != "converse":
            raise UsageError(f"backend {config.name!r}: prompt_cache=true needs api converse (the cachePoint is "
                             f"placed in the Converse request), got api {self.api}")
        self.stream = opts.stream
        self.profile_check = "not run"
        self.profile_destinations: list[str] | None = None  # read live by GetInferenceProfile
        self.profile_unverified_accepted = False
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
            "api": self.api, "stream": self.stream, "endpoint": self.endpoint if self._client is not None else self.endpoint_url,
            "emulated": self.emulated, "profile_check": self.profile_check,
            "catalog_verified": self.entry.verified if self.entry else None,
            "unverified_facts": [f.claim for f in self.entry.facts if not f.verified] if self.entry else [],
            "max_image_dim": self.max_image_dim, "read_timeout": self.read_timeout,
            # Residency facts for the report: added destinations (e.g. New Zealand) and an accepted
            # unverified profile are shown prominently.
            "residency": self.residency_facts(), "profile_destinations": self.profile_destinations,
            "profile_unverified_accepted": self.profile_unverified_accepted,
            "quota_tpm": self.quota_tpm, "quota_note": self.quota_note,
            "model_catalog": self._catalog_source(),
        })
        return d

    def _catalog_source(self) -> dict[str, Any]:
        refreshed = self.model_catalog.refreshed
        return {"file": self.opts.model_catalog or os.environ.get(CATALOG_ENV) or None,  # type: ignore[attr-defined]
                "refreshed": refreshed.date.isoformat() if refreshed else None,
                "source": refreshed.source if refreshed else "packaged bedrock_models.yaml (dated facts)"}

    def preflight(self) -> None:
        """Residency at config time (zero requests if refused), vision support, profile destinations."""
        client = self._get_client()
        check_config(self.region, client.meta.endpoint_url, self.model_id, policy=self.policy,
                     allow_loopback=self.allow_loopback, catalog=self.model_catalog)
        if self.entry is not None and not self.entry.vision:
            raise SetupError(f"{self.model_id} is text-only (catalog): it cannot read document images")
        aws.require_credentials(self._session, self.name)
        self._check_profile(client.meta.endpoint_url)
        self.read_quota(self._quota_names(), runtime_endpoint=client.meta.endpoint_url)

    def _quota_names(self) -> list[str]:
        """Service Quotas names of this model's tokens-per-minute quota (cross-Region for a profile)."""
        if self.entry is None or not self.entry.quota_model_name:
            return []
        names = self.model_catalog.quota_names
        templates = names.profile if self._is_profile() else names.base
        return [t.format(model=self.entry.quota_model_name) for t in templates]

    def _is_profile(self) -> bool:
        arn = parse_arn(self.model_id)
        if arn is not None:
            return arn.resource_type in ("inference-profile", "application-inference-profile")
        return (self.entry is not None and self.entry.kind == "profile") or \
            profile_prefix(self.model_id) in self.policy.allowed_profile_prefixes

    def _check_profile(self, endpoint: str) -> None:
        """Fail closed: a profile is used only when every destination GetInferenceProfile lists is
        an allowed destination. A real run whose destinations cannot be read stops here, before any
        document, unless the user accepted that (recorded on the run)."""
        self.profile_destinations = None
        if not self._is_profile():
            self.profile_check = "not applicable: base model id"
            return
        mode = self.preflight_profile
        local = is_loopback(aws.host_of(endpoint), self.policy)
        if mode == "never" or (mode == "auto" and local):
            why = "preflight_profile=never" if mode == "never" else "endpoint is loopback (emulator)"
            if local:  # documents go to a local server: nothing can leave
                self.profile_check = f"not checked: {why}"
                return
            self._unverified(f"destinations not checked ({why})")
            return
        ctl = self.guard.attach(aws.make_client(
            "bedrock", region=self.region, endpoint_url=self.opts.control_endpoint_url,  # type: ignore[attr-defined]
            read_timeout=30, connect_timeout=self.connect_timeout, session=self._session))
        decisions: list = []
        try:
            with self.guard.recording(decisions):
                resp = ctl.get_inference_profile(inferenceProfileIdentifier=self.model_id)
        except Exception as exc:  # noqa: BLE001 - refused, denied or unreachable: fail closed below
            self.record_outside_loop(self._facts(
                "GetInferenceProfile", decisions, status=aws.http_status(exc), request_id=aws.request_id(exc),
                error_class=aws.classify_aws_error(exc), service="bedrock"))
            if isinstance(exc, ResidencyError):  # the control request itself would leave the policy
                raise SetupError(f"inference profile check refused: {exc}") from None
            self._unverified(f"destinations could not be read: {aws.error_line(exc)}")
            return
        finally:
            ctl.close()
        self.record_outside_loop(self._facts("GetInferenceProfile", decisions, status=aws.http_status(resp) or 200,
                                             request_id=aws.request_id(resp), service="bedrock"))
        verdict = judge_inference_profile(resp, self.policy)
        self.profile_destinations = list(verdict.destinations) or None
        if not verdict.ok and not verdict.unknown:
            self.profile_check = f"refused: {verdict.reason}"
            raise SetupError(f"residency: inference profile {self.model_id} refused before any document was "
                             f"sent: {verdict.reason}")
        if verdict.unknown:
            self._unverified(f"destinations unreadable: {verdict.reason}")
            return
        self.profile_check = "verified: destinations " + ", ".join(verdict.destinations)

    def _unverified(self, reason: str) -> None:
        """Stop the run (one line) unless the user accepted an unverified profile; then record it."""
        if not self.accept_unverified_profile:
            self.profile_check = f"refused: {reason}"
            raise SetupError(f"residency: inference profile {self.model_id}: {reason}; refusing to send documents "
                             "to destinations that were not verified (pass -o accept_unverified_profile=true to "
                             "accept; the run and the report then say so)")
        self.profile_unverified_accepted = True
        self.profile_check = f"UNVERIFIED, accepted by the user (accept_unverified_profile=true): {reason}"
        log.warning("inference profile %s: %s; running anyway because accept_unverified_profile=true",
                    self.model_id, reason)

    # ------------------------------------------------------------ one attempt

    def image_budget(self) -> ImageBudget:
        """The catalog's image limits, max_image_dim, and whether this API and model take the PDF itself."""
        limits = self.model_catalog.image_limits
        takes_pdf = self.pdf_mode == "document" and (
            self.api == "invoke-anthropic" or self.api == "converse" and (self.entry is None or self.entry.documents))
        side = min(limits.max_side_px, self.max_image_dim) if self.max_image_dim else limits.max_side_px
        return ImageBudget(formats=tuple(limits.formats), max_side_px=side,
                           max_request_bytes=limits.max_request_bytes, takes_pdf=takes_pdf,
                           max_document_bytes=MAX_DOCUMENT_BYTES)

    def tools_unsupported(self) -> str | None:
        if self.api != "converse":
            return f"api {self.api} sends no tool configuration (use --api converse)"
        return None

    def generate(self, request: Request) -> Response:
        """One attempt; a forced tool call answered in text instead is this attempt's parse failure:
        raised with the answer (its text, tokens and cost kept), never scored as text, never retried."""
        resp = super().generate(request)
        if request.tool is not None and resp.extra.get(body.STRUCTURED_KEY) != "tool_use":
            resp.error_class = ErrorClass.PARSE
            resp.error = (f"structured output: the model answered in text (stopReason {resp.stop_reason}) "
                          f"instead of calling the {request.tool.name} tool")
            raise BackendError(resp.error, ErrorClass.PARSE, response=resp)
        return resp

    def _prepare(self, request: Request) -> tuple[list, bytes | None]:
        """The request as the runner prepared it (migbench.images): nothing is decoded here."""
        if self.entry is not None and not self.entry.vision and (request.images or request.pdf_bytes):
            raise BackendError(f"{self.model_id} is text-only: it cannot take images", ErrorClass.PERMANENT)
        if request.pdf_bytes is not None and not self.image_budget().takes_pdf:
            raise BackendError(f"api {self.api} with pdf_mode={self.pdf_mode} takes no PDF document: "
                               "prepare the request as pages", ErrorClass.INPUT)
        return list(request.images), request.pdf_bytes

    def _build(self, request: Request, prepared: list, document: bytes | None) -> dict[str, Any]:
        parts = [(p.data, p.format) for p in prepared]
        if self.api == "converse":
            return body.converse_request(self.model_id, request.prompt, parts, system=request.system,
                                         params=request.params, document=document, document_name_=request.doc_id,
                                         tool=request.tool, cache_point=self.prompt_cache)
        if self.api == "invoke-nova":
            return body.invoke_request(self.model_id, body.nova_invoke_body(
                request.prompt, parts, system=request.system, params=request.params))
        return body.invoke_request(self.model_id, body.anthropic_invoke_body(
            request.prompt, parts, system=request.system, params=request.params, document=document))

    def _prepare_call(self, request: Request) -> aws.Call:
        prepared, document = self._prepare(request)
        operation = (_STREAM_OPERATION if self.stream else _OPERATION)[self.api]
        return aws.Call(operation, self._build(request, prepared, document), extra={
            "api": self.api, "stream": self.stream,
            "images": [{"w": p.width, "h": p.height, "format": p.format, "converted": p.converted}
                       for p in prepared],
            "document_block": document is not None,
            **({"tool": request.tool.name} if request.tool is not None else {}),
            **({"cache_point": True} if self.prompt_cache else {}),
            "estimated_image_tokens": sum(estimate_image_tokens(p.width, p.height) for p in prepared)})

    def _send(self, client: Any, call: aws.Call) -> aws.Answer:
        if self.stream:
            return self._send_streamed(client, call)
        if self.api == "converse":
            return aws.Answer(client.converse(**call.kwargs))
        raw = client.invoke_model(**call.kwargs)
        return aws.Answer.streamed(raw, "body", call.operation)

    def _send_streamed(self, client: Any, call: aws.Call) -> aws.Answer:
        """Open the stream and consume it here, on the attempt's thread, so attempt_timeout bounds
        the whole answer and not only its first bytes."""
        if self.api == "converse":
            raw = client.converse_stream(**call.kwargs)
            events = raw.pop("stream")
            assemble = lambda: streams.assemble_converse_stream(events)
        else:
            raw = client.invoke_model_with_response_stream(**call.kwargs)
            events = raw.pop("body")
            assembler = streams.assemble_nova_stream if self.api == "invoke-nova" else streams.assemble_anthropic_stream
            assemble = lambda: assembler(streams.decode_invoke_chunks(events))
        try:
            assembled = assemble()
        except aws.AnswerError as exc:  # incomplete or malformed: the 200's facts go to the audit
            exc.status, exc.request_id = aws.http_status(raw) or 200, aws.request_id(raw)
            raise
        except Exception as exc:
            if aws.error_code(exc) is not None:
                # An exception event (EventStreamError, e.g. throttlingException) carries no metadata
                # of its own: the stream's 200 and request id are its audit facts.
                exc.response.setdefault("ResponseMetadata", raw.get("ResponseMetadata") or {})  # type: ignore[attr-defined]
                raise
            if aws.classify_aws_error(exc) is ErrorClass.TIMEOUT:
                raise
            err = aws.IncompleteAnswer(f"{call.operation}: stream broke off: {aws.safe_message(exc)}")
            err.status, err.request_id = aws.http_status(raw) or 200, aws.request_id(raw)
            raise err from exc
        finally:
            events.close()
        return aws.Answer(raw, assembled=assembled, first_token_at=assembled.first_token_at)

    def _parse(self, call: aws.Call, answer: aws.Answer) -> body.ParsedOutput:
        if answer.assembled is not None:  # a stream, rebuilt as the one-shot answer's shape
            done: streams.Assembled = answer.assembled
            if self.api == "converse":
                return body.parse_converse_response(done.answer, call.extra.get("tool"))
            if self.api == "invoke-nova":
                return body.parse_nova_invoke_response(done.answer, done.headers)
            return body.parse_anthropic_invoke_response(done.answer, done.headers)
        if self.api == "converse":
            return body.parse_converse_response(answer.raw, call.extra.get("tool"))
        payload = aws.load_json_answer(answer.body or b"", answer.headers, call.operation)
        if self.api == "invoke-nova":
            return body.parse_nova_invoke_response(payload, answer.headers)
        return body.parse_anthropic_invoke_response(payload, answer.headers)
