from django.http import HttpRequest

from . import provider


def model_status(request: HttpRequest) -> dict:
    return {
        "model_offline": provider.is_offline(),
        "model_provider": provider.provider_label(),
        "model_default": provider.default_model(),
    }
