from django.http import HttpRequest

from conversations.llm import client, providers


def model_status(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    return {
        "model_offline": client.is_offline(),
        # Staff see a mistake in the providers file that the site is running despite.
        "providers_problem": providers.problem() if user is not None and user.is_staff else "",
    }
