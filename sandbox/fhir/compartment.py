"""Patient compartment membership, from the search index: shared by ``$everything`` and bulk ``$export``."""

from __future__ import annotations

from sqlalchemy import BindParameter, ColumnElement, Select, select, union

from sandbox.fhir.search_params import patient_compartment
from sandbox.store.layers import View
from sandbox.store.schema import resources, sp_reference


def compartment_members(view: View, types: frozenset[str] | None, patients: BindParameter) -> Select | None:
    """(layer_id, resource_type, id) of the patients and of every resource their compartments' index rows name.

    ``patients``: a bind parameter holding one Patient id (``$everything``), or a list of them when it is
    ``expanding`` (bulk export).
    One branch per type, so each uses the value-first index of ``sp_reference``;
    ``union`` (not ``union all``) because a resource may name the patient twice
    (as subject and as performer).  The layer comes along so that a caller joining
    on ``resources`` keeps only rows of the version the sandbox sees.
    """
    ref = sp_reference
    r = resources
    branches: list[Select] = []
    if types is None or "Patient" in types:
        branches.append(
            select(r.c.layer_id, r.c.resource_type, r.c.id).where(
                r.c.layer_id.in_(view.layers), r.c.resource_type == "Patient", _is(r.c.id, patients)
            )
        )
    branches.extend(
        select(ref.c.layer_id, ref.c.resource_type, ref.c.resource_id.label("id")).where(
            ref.c.layer_id.in_(view.layers),
            ref.c.resource_type == rtype,
            ref.c.param.in_(params),
            _is(ref.c.target_id, patients),
            ref.c.target_type == "Patient",
        )
        for rtype, params in sorted(patient_compartment().items())
        if types is None or rtype in types
    )
    return union(*branches) if branches else None  # type: ignore[return-value]


def _is(column: ColumnElement, patients: BindParameter) -> ColumnElement[bool]:
    return column.in_(patients) if patients.expanding else column == patients
