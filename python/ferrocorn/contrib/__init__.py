"""Framework integrations of ferrocorn's shared app cache (``ferrocorn.cache``).

- ``ferrocorn.contrib.django``: a Django cache backend,
  ``CACHES = {"default": {"BACKEND": "ferrocorn.contrib.django.FerrocornCache"}}``.
- ``ferrocorn.contrib.flask_caching``: a cachelib cache that Flask-Caching can create,
  ``Cache(app, config={"CACHE_TYPE": "ferrocorn.contrib.flask_caching.FerrocornCache"})``.

Each is a thin adapter over the same store every worker of a ferrocorn instance shares, and is
importable only where its framework is installed.
"""
