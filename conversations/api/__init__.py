"""The JSON API under /api/v1/: views.py (the endpoints), schema.py (its OpenAPI description),
docs.py (the documentation page) and urls.py."""
