"""Several providers (conversations/llm/providers.py): two fake OpenAI-compatible servers named in a
providers file, and the model picker as a user reads it."""

from dataclasses import dataclass
from pathlib import Path

from tests.support.fake_openai import FakeOpenAI
from tests.support.xss import Element, parse

LOCAL_MODELS = ("llama3.2:3b", "qwen2.5:7b-instruct")
ROUTER_MODELS = ("meta-llama/llama-3.1-8b-instruct", "openai/gpt-4o")
ROUTER_KEY = "sk-router-test"


def providers_toml(local: FakeOpenAI, router: FakeOpenAI, *, extra: str = "") -> str:
    """A providers file naming two servers: `local` (Ollama-style ids, no key) and `router`
    (OpenRouter-style ids, its key in ROUTER_TEST_KEY). Their manual lists differ from what
    they serve, so a page shows which of the two it got."""
    return f"""
[[providers]]
slug = "local"
label = "Local Ollama"
base_url = "{local.base_url}"
models = ["manual-local-model"]
default_model = "llama3.2:3b"

[[providers]]
slug = "router"
label = "Router"
base_url = "{router.base_url}"
api_key_env = "ROUTER_TEST_KEY"
models = ["manual-router-model"]
default_model = "openai/gpt-4o"
{extra}
"""


@dataclass
class TwoProviders:
    local: FakeOpenAI
    router: FakeOpenAI
    file: Path


def picker(html: str, select_id: str = "settings-model") -> dict[str, list[str]]:
    """The model picker as a user reads it: each provider's label and its models."""
    select = parse(html).by_id(select_id)
    return {
        group.attrs["label"]: [option.text() for option in group.all("option")]
        for group in select.all("optgroup")
    }


def selected(html: str, select_id: str = "settings-model") -> str:
    select: Element = parse(html).by_id(select_id)
    [option] = [option for option in select.all("option") if "selected" in option.attrs]
    return option.attrs["value"]
