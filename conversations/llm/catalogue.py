"""The model catalogue: the models on offer from each configured provider (what its /v1/models
lists, cached, or its manual list), grouped for the model picker, and a conversation's stored
choice resolved to a provider and a model."""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from conversations.llm import client
from conversations.llm.providers import (
    FAILED_LISTING_SECONDS,
    ModelChoice,
    Provider,
    configured,
    default_provider,
    get,
)

logger = logging.getLogger(__name__)


def default_choice() -> ModelChoice:
    provider = default_provider()
    return ModelChoice(provider, provider.default_model)


def _models_cache_key(provider: Provider) -> str:
    # The URL is part of the key: a provider moved elsewhere lists its models afresh.
    return f"provider-models:{provider.slug}:{provider.base_url}"


def available_models(provider: Provider) -> list[str]:
    """The provider's models: what its /v1/models lists (cached), else its manual list.

    Never raises for an unreachable provider: the picker still offers the manual list.
    """
    if not provider.discover:
        return list(provider.models)
    key = _models_cache_key(provider)
    listed = cache.get(key)
    if listed is None:
        try:
            listed = client.list_models(provider)
        except client.ProviderError as error:
            logger.warning("Listing the models of %s failed: %s", provider.slug, error)
            cache.set(key, [], FAILED_LISTING_SECONDS)
            listed = []
        else:
            cache.set(key, listed, settings.CHAT_MODELS_CACHE_SECONDS)
    return listed or list(provider.models)


@dataclass
class ModelGroup:
    provider: Provider
    choices: list[ModelChoice]


def model_groups(*, keep: ModelChoice | None = None) -> list[ModelGroup]:
    """Every model on offer, grouped by provider; `keep` (a conversation's current choice) is
    offered too even when its provider no longer lists it, so saving other settings keeps it."""
    groups = []
    for provider in configured().values():
        models = available_models(provider)
        if provider.default_model and provider.default_model not in models:
            models.insert(0, provider.default_model)
        groups.append(ModelGroup(provider, [ModelChoice(provider, model) for model in models]))
    if keep is not None and not any(
        choice.value == keep.value for group in groups for choice in group.choices
    ):
        groups.append(ModelGroup(keep.provider, [keep]))
    return groups


def resolve(slug: str, model: str) -> ModelChoice:
    """The stored choice (slug and model, either empty for the site default) as a ModelChoice.

    A provider no longer configured yields a stand-in whose label says so.
    """
    if not slug and not model:
        return default_choice()
    provider = get(slug)
    if provider is None:
        provider = Provider(slug=slug, label=f"{slug} (no longer configured)")
    return ModelChoice(provider, model or provider.default_model)


def for_conversation(metadata: dict) -> ModelChoice:
    """A conversation's model, from its settings (the site default when it has none)."""
    return resolve(metadata.get("provider", ""), metadata.get("model", ""))
