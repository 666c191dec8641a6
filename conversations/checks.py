from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from conversations.llm import providers


@checks.register()
def providers_file_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """A mistake in CHAT_PROVIDERS_FILE or CHAT_DEFAULT_PROVIDER shows at `manage.py check`
    and `migrate`, and stops a server at start (chatsite/startup.py), not first as a failing
    page. The file as it is now: a running process's last good version does not hide it."""
    try:
        providers.check_configuration()
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="conversations.E001")]
    return []
