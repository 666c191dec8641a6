from django.http import HttpRequest

from . import provider


def model_status(request: HttpRequest) -> dict:
    return {
        "model_offline": provider.is_offline(),
    }
