"""The bodies the API answers with, as models for the OpenAPI document.

The routes write their answers themselves (as bytes or plain dicts, for speed); these models
only describe them. The schemathesis test in ``tests/api/test_openapi_fuzz.py`` checks every
answer against them, so the two cannot drift apart unnoticed. Names follow OpenRouter's own
document where it has one (``ImageGenerationResponse``, ``ImageEndpoint`` …).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, RootModel

LimitReset = Literal["daily", "weekly", "monthly"]

# --- errors ---


class ErrorDetail(BaseModel):
    code: int = Field(description="The HTTP status of the answer.")
    message: str
    metadata: dict[str, Any] | None = Field(
        None, description="What is known about the failure: `error_type`, `param`, `provider_name` …"
    )


class ErrorResponse(BaseModel):
    """OpenRouter's error envelope; every error answer has this body."""

    error: ErrorDetail


# --- POST /images ---


class ImageData(BaseModel):
    b64_json: str = Field(description="The image as raw base64 (not a data URL); SVG is its UTF-8 markup.")
    media_type: str | None = Field(None, description="`image/png`, `image/jpeg`, `image/webp` or `image/svg+xml`.")


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0
    image_tokens: int = 0


class CostDetails(BaseModel):
    upstream_inference_cost: float | None
    upstream_inference_prompt_cost: float
    upstream_inference_completions_cost: float


class ImageGenerationUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None = Field(None, description="What the key was charged, in USD.")
    is_byok: bool | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    cost_details: CostDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class ImageGenerationResponse(BaseModel):
    created: int = Field(description="Unix seconds.")
    data: list[ImageData]
    usage: ImageGenerationUsage | None = None


class ImageStreamPartialImage(BaseModel):
    """A preview of the image being made; never billed."""

    type: Literal["image_generation.partial_image"]
    partial_image_index: int = Field(description="0-based, per image.")
    b64_json: str


class ImageStreamTextChunk(BaseModel):
    """A piece of a text-based image (SVG) as it is written."""

    type: Literal["image_generation.text_chunk"]
    text: str
    phase: Literal["content", "reasoning", "draft"]


class ImageStreamCompleted(BaseModel):
    """One finished image; the last one carries the usage of the whole generation."""

    type: Literal["image_generation.completed"]
    b64_json: str
    created: int
    media_type: str | None = None
    usage: ImageGenerationUsage | None = None


class ImageStreamErrorDetail(BaseModel):
    message: str
    code: str | None = Field(None, description="A string here, unlike the numeric `code` of error answers.")
    param: str | None = None
    type: str | None = None


class ImageStreamError(BaseModel):
    """The generation failed after the answer started; the stream then ends with `[DONE]`."""

    type: Literal["error"]
    error: ImageStreamErrorDetail


class ImageStreamEvent(RootModel[Annotated[
    ImageStreamPartialImage | ImageStreamTextChunk | ImageStreamCompleted | ImageStreamError,
    Field(discriminator="type"),
]]):
    """The JSON after `data: ` in each event of an image stream."""


# --- image model discovery ---


class EnumCapability(BaseModel):
    type: Literal["enum"]
    values: list[str]


class RangeCapability(BaseModel):
    type: Literal["range"]
    min: float
    max: float


class BooleanCapability(BaseModel):
    type: Literal["boolean"]


CapabilityDescriptor = Annotated[EnumCapability | RangeCapability | BooleanCapability, Field(discriminator="type")]


class ImagePricingEntry(BaseModel):
    billable: Literal["output_image", "input_image", "input_font", "input_reference", "input_text"]
    unit: Literal["image", "megapixel", "token", "request"]
    cost_usd: float
    variant: str | None = None
    first_unit_usd: float | None = Field(None, description="imagegate: the price of each image's first megapixel.")
    pixels_per_megapixel: int | None = Field(None, description="imagegate: the pixels of a billed megapixel.")


class ImageArchitecture(BaseModel):
    input_modalities: list[str]
    output_modalities: list[str]


class ImageModelListItem(BaseModel):
    id: str
    name: str
    description: str
    created: int
    architecture: ImageArchitecture
    supported_parameters: dict[str, CapabilityDescriptor]
    supports_streaming: bool
    endpoints: str = Field(description="The relative URL of the model's endpoint records.")


class ImageModelsListResponse(BaseModel):
    data: list[ImageModelListItem]


class ImageEndpoint(BaseModel):
    provider_name: str
    provider_slug: str
    provider_tag: str | None
    supported_parameters: dict[str, CapabilityDescriptor]
    allowed_passthrough_parameters: list[str]
    supports_streaming: bool
    pricing: list[ImagePricingEntry]
    configured: bool | None = Field(None, description="imagegate, with `include_unconfigured`.")
    requires: list[str] | None = Field(None, description="imagegate, with `include_unconfigured`.")
    retired: str | None = Field(None, description="imagegate, with `include_unconfigured`.")


class ImageModelEndpointsResponse(BaseModel):
    id: str
    endpoints: list[ImageEndpoint]


# --- the general Models API ---


class ModelArchitecture(BaseModel):
    modality: str | None
    input_modalities: list[str]
    output_modalities: list[str]
    tokenizer: str | None
    instruct_type: str | None


class TopProvider(BaseModel):
    context_length: int | None
    max_completion_tokens: int | None
    is_moderated: bool


class ModelLinks(BaseModel):
    details: str


class PublicModel(BaseModel):
    id: str
    canonical_slug: str
    name: str
    created: int
    description: str
    context_length: int | None
    architecture: ModelArchitecture
    pricing: dict[str, str] = Field(description="USD per unit, as strings (`PublicPricing`).")
    top_provider: TopProvider
    per_request_limits: dict[str, Any] | None
    supported_parameters: list[str]
    default_parameters: dict[str, Any] | None
    supported_voices: list[str] | None
    expiration_date: str | None
    links: ModelLinks


class PageLinks(BaseModel):
    next: str | None


class ModelsListResponse(BaseModel):
    data: list[PublicModel]
    total_count: int
    links: PageLinks


class ModelResponse(BaseModel):
    data: PublicModel


class PublicEndpoint(BaseModel):
    name: str
    model_id: str
    model_name: str
    context_length: int
    pricing: dict[str, str]
    provider_name: str
    tag: str
    quantization: str | None
    max_completion_tokens: int | None
    max_prompt_tokens: int | None
    supported_parameters: list[str]
    status: int
    uptime_last_30m: float | None
    uptime_last_5m: float | None
    uptime_last_1d: float | None
    latency_last_30m: dict[str, float] | None
    throughput_last_30m: dict[str, float] | None
    supports_implicit_caching: bool
    supports_image_reference: bool


class ModelEndpoints(BaseModel):
    id: str
    name: str
    created: int
    description: str
    architecture: ModelArchitecture
    endpoints: list[PublicEndpoint]


class ModelEndpointsResponse(BaseModel):
    data: ModelEndpoints


# --- generations ---


class ProviderResponse(BaseModel):
    provider_name: str | None
    provider_slug: str | None
    status: int | None
    latency: int | None
    error: str | None
    is_byok: bool
    model_permaslug: str


class Generation(BaseModel):
    id: str
    api_type: Literal["image"]
    model: str
    created_at: str
    streamed: bool
    cancelled: bool
    latency: int | None
    generation_time: int | None
    tokens_prompt: int
    tokens_completion: int
    native_tokens_completion_images: int
    num_media_prompt: int
    num_media_completion: int
    finish_reason: str
    native_finish_reason: str
    usage: float = Field(description="What the key was charged, in USD.")
    total_cost: float
    upstream_inference_cost: float | None
    provider_name: str | None
    is_byok: bool
    provider_responses: list[ProviderResponse]
    status: Literal["succeeded", "failed", "cancelled"]
    http_status: int
    error_message: str | None
    origin: str | None
    app_title: str | None
    session_id: str | None
    user: str | None
    applied: dict[str, Any] = Field(description="imagegate: the parameters the provider was asked for.")
    images: list[dict[str, Any]] = Field(description="imagegate: each delivered image's size and type.")
    data_region: str
    request_id: str | None
    router: str | None


class GenerationResponse(BaseModel):
    data: Generation


class ModelUsage(BaseModel):
    model: str
    requests: int
    images: int
    cost_usd: float


class ActivityResponse(BaseModel):
    data: list[Generation]
    by_model: list[ModelUsage]


# --- the current key and credits ---


class KeyUsageFields(BaseModel):
    usage: float
    usage_daily: float
    usage_weekly: float
    usage_monthly: float
    byok_usage: float
    byok_usage_daily: float
    byok_usage_weekly: float
    byok_usage_monthly: float
    limit: float | None
    limit_remaining: float | None
    limit_reset: LimitReset | None


class Budget(BaseModel):
    budget_id: str | None
    guardrail_id: str | None
    include_byok: bool
    limit_usd: float
    remaining_usd: float
    reset_interval: LimitReset | None
    resets_at: str | None
    scope: str
    spend_usd: float


class KeyRateLimit(BaseModel):
    requests: int = Field(description="Requests per minute; -1 means no limit.")
    interval: str
    note: str


class FreeModelRequests(BaseModel):
    limit: int
    remaining: int
    used: int


class CurrentKey(KeyUsageFields):
    label: str
    name: str
    is_free_tier: bool
    is_management_key: bool
    is_provisioning_key: bool
    include_byok_in_limit: bool
    expires_at: str | None
    creator_user_id: str | None
    organization_id: str | None
    workspace_id: str | None
    allowed_data_regions: list[str]
    budgets: list[Budget]
    effective_budget: Budget | None
    free_model_daily_requests: FreeModelRequests
    rate_limit: KeyRateLimit
    concurrency_limit: int | None


class CurrentKeyResponse(BaseModel):
    data: CurrentKey


class Credits(BaseModel):
    total_credits: float
    total_usage: float
    balance: float | None = Field(description="imagegate: what is left, or null when the account is not metered.")
    metered: bool


class CreditsResponse(BaseModel):
    data: Credits


# --- key management ---


class ApiKey(KeyUsageFields):
    hash: str = Field(description="Names the key in `/keys/{key_hash}`.")
    name: str
    label: str
    disabled: bool
    created_at: str | None
    updated_at: str | None
    last_used_at: str | None
    expires_at: str | None
    include_byok_in_limit: bool
    creator_user_id: str | None
    external_user: str | None
    workspace_id: str
    is_management_key: bool


class ApiKeysListResponse(BaseModel):
    data: list[ApiKey]


class ApiKeyResponse(BaseModel):
    data: ApiKey


class ApiKeyCreatedResponse(BaseModel):
    data: ApiKey
    key: str = Field(description="The new key's secret: shown this once only.")


class ApiKeyDeletedResponse(BaseModel):
    deleted: Literal[True]
