#!/usr/bin/env python
import os
import sys

# Commands that never touch the database: they run without connecting to it first.
WITHOUT_DATABASE = {
    "check",
    "collectstatic",
    "compilemessages",
    "diffsettings",
    "findstatic",
    "help",
    "makemessages",
    "makemigrations",
    "sendtestemail",
    "version",
}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    # A configuration mistake (a missing SECRET_KEY, a malformed variable, a database that
    # refuses the role) is one line saying what to fix, not a traceback.
    try:
        command = sys.argv[1] if len(sys.argv) > 1 else "help"
        if command not in WITHOUT_DATABASE and not command.startswith("-"):
            import django

            from chatsite import startup

            django.setup()
            startup.check_database()
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
