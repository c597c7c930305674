"""The Django app: add "cdc.contrib.django" to INSTALLED_APPS, then ``manage.py migrate``."""

from __future__ import annotations

from django.apps import AppConfig


class CdcConfig(AppConfig):
    name = "cdc.contrib.django"
    label = "cdc"
    verbose_name = "CDC outbox"
    default_auto_field = "django.db.models.BigAutoField"
