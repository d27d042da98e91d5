"""The trainer console (cohorts, progress, exports, certificates) and the vendor console (sandboxes, request
log, SMART apps, CDS services).

``router`` holds every console page; ``web/routes.py`` includes it.
"""

from __future__ import annotations

from fastapi import APIRouter

from web.console import assets, cds_services, cohorts, progress, smart_apps, vendor

router = APIRouter()
for part in (assets, cds_services, cohorts, progress, smart_apps, vendor):
    router.include_router(part.router)
