"""The trainer console (cohorts, progress, exports, certificates) and the vendor console (sandboxes, request
log, SMART apps, CDS services, HL7 v2 interfaces).

``router`` holds every console page; ``web/routes.py`` includes it.
"""

from __future__ import annotations

from fastapi import APIRouter

from web.console import assets, cds_services, cohorts, hl7v2, progress, smart_apps, vendor

router = APIRouter()
for part in (assets, cds_services, cohorts, hl7v2, progress, smart_apps, vendor):
    router.include_router(part.router)
