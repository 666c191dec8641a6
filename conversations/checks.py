from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import providers


@checks.register()
def providers_file_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """A mistake in CHAT_PROVIDERS_FILE shows at `manage.py check` and `migrate`, not first as
    a failing page."""
    try:
        providers.configured()
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="conversations.E001")]
    return []
