"""HL7 v2 data types as FHIR data types, after the HL7 v2-to-FHIR IG's datatype maps (CX, XPN, XAD, XTN, CWE, DTM).

Only what a sandbox needs: each function takes the components of one
repetition (``Segment.components``) and returns FHIR JSON, or None when the
v2 value is empty.
"""

from __future__ import annotations

from typing import Any

from sandbox.hl7v2.er7 import Segment

# HL7 table 0396 coding system names -> FHIR system URIs (terminology.hl7.org's v2 table 0396 map).
CODE_SYSTEMS = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMEDCT": "http://snomed.info/sct",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://hl7.org/fhir/sid/mvx",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
    "UCUM": "http://unitsofmeasure.org",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "NPI": "http://hl7.org/fhir/sid/us-npi",
}
SYSTEM_CODES = {
    "http://loinc.org": "LN",
    "http://snomed.info/sct": "SCT",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM",
    "http://hl7.org/fhir/sid/icd-10-cm": "I10C",
    "http://hl7.org/fhir/sid/icd-10": "I10",
    "http://unitsofmeasure.org": "UCUM",
    "http://www.ama-assn.org/go/cpt": "CPT",
}
# An assigning authority without an OID or URI still needs a stable system, so that PID-3 matches across messages.
LOCAL_AUTHORITY = "urn:ehr-sandbox:hl7v2:assigning-authority:"
V2_TABLE = "http://terminology.hl7.org/CodeSystem/v2-"


def system_for(name: str) -> str | None:
    if not name:
        return None
    if name.startswith(("http://", "https://", "urn:")):
        return name
    if name.upper().startswith("HL7") and name[3:].isdigit():
        return f"{V2_TABLE}{name[3:]}"
    return CODE_SYSTEMS.get(name.upper(), f"urn:ehr-sandbox:hl7v2:coding-system:{name}")


def identifier(cx: list[str]) -> dict[str, Any] | None:
    """CX -> Identifier: CX.1 value; CX.4 assigning authority (HD) -> system; CX.5 type."""
    value = cx[0]
    if not value:
        return None
    out: dict[str, Any] = {"value": value}
    if system := authority_system(cx[3]):
        out["system"] = system
    if cx[4]:
        out["type"] = {"coding": [{"system": f"{V2_TABLE}0203", "code": cx[4]}]}
    return out


def authority_system(hd: str) -> str | None:
    """HD (namespace&universal id&type, flattened here to its first subcomponent set) -> a system URI."""
    namespace, _, rest = hd.partition("&")
    universal, _, kind = rest.partition("&")
    if universal and kind.upper() == "ISO":
        return f"urn:oid:{universal}"
    if universal and kind.upper() in ("URI", "URL"):
        return universal
    return f"{LOCAL_AUTHORITY}{namespace}" if namespace else None


def cx_list(segment: Segment, n: int) -> list[dict[str, Any]]:
    """Every repetition of a CX field as Identifiers (the assigning authority keeps its subcomponents)."""
    found = []
    for rep in segment.repetitions(n):
        comps = ["&".join(c) for c in rep] + [""] * 10
        comps[0] = rep[0][0] if rep else ""
        if ident := identifier(comps):
            found.append(ident)
    return found


def human_name(xpn: list[str]) -> dict[str, Any] | None:
    """XPN -> HumanName: family^given^middle^suffix^prefix; XPN.7 name type (L -> official, D -> usual ...)."""
    family, given, middle, suffix, prefix = xpn[0], xpn[1], xpn[2], xpn[3], xpn[4]
    if not (family or given):
        return None
    out: dict[str, Any] = {}
    use = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous", "TEMP": "temp"}.get(xpn[6])
    if use:
        out["use"] = use
    if family:
        out["family"] = family
    givens = [g for g in (given, *middle.split(" ")) if g]
    if givens:
        out["given"] = givens
    if prefix:
        out["prefix"] = [prefix]
    if suffix:
        out["suffix"] = [suffix]
    return out


def address(xad: list[str]) -> dict[str, Any] | None:
    """XAD -> Address: street^other^city^state^zip^country^type."""
    lines = [x for x in (xad[0], xad[1]) if x]
    out: dict[str, Any] = {}
    if lines:
        out["line"] = lines
    for key, value in (("city", xad[2]), ("state", xad[3]), ("postalCode", xad[4]), ("country", xad[5])):
        if value:
            out[key] = value
    use = {"H": "home", "O": "work", "C": "temp", "BA": "billing"}.get(xad[6])
    if use and out:
        out["use"] = use
    return out or None


def contact_point(xtn: list[str], default_use: str = "home") -> dict[str, Any] | None:
    """XTN -> ContactPoint: XTN.1 (deprecated number) or XTN.4 email / XTN.12 unformatted number."""
    equipment = xtn[2]
    if equipment == "Internet" or xtn[1] == "NET":
        return {"system": "email", "value": xtn[3]} if xtn[3] else None
    number = xtn[0] or xtn[11] or "".join(x for x in (xtn[5], xtn[6]) if x)
    if not number:
        return None
    use = {"PRN": "home", "WPN": "work", "ORN": "home", "EMR": "home"}.get(xtn[1], default_use)
    system = {"FX": "fax", "BP": "pager"}.get(equipment, "phone")
    if equipment == "CP":
        use = "mobile"
    return {"system": system, "value": number, "use": use}


def codeable_concept(cwe: list[str]) -> dict[str, Any] | None:
    """CWE/CE -> CodeableConcept: code^text^system, alternate code^text^system at 4-6, original text at 9."""
    codings = []
    for code, display, system in ((cwe[0], cwe[1], cwe[2]), (cwe[3], cwe[4], cwe[5])):
        if code:
            coding: dict[str, Any] = {"code": code}
            if uri := system_for(system):
                coding = {"system": uri, **coding}
            if display:
                coding["display"] = display
            codings.append(coding)
    text = cwe[8] or (cwe[1] if not codings else "")
    if not codings and not text:
        return None
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    return out


def date_time(value: str, segment: Segment | None = None, n: int = 0) -> str | None:
    """DTM (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]) -> FHIR date or dateTime.

    A time without a zone is taken as UTC: FHIR needs a zone once there is a time.
    """
    if not value:
        return None
    body, zone = value, ""
    for sign in ("+", "-"):
        if sign in value[1:]:
            body, zone = value.split(sign, 1)[0], sign + value.split(sign, 1)[1]
            break
    digits, _, fraction = body.partition(".")
    ok = digits.isdigit() and len(digits) in (4, 6, 8, 10, 12, 14) and (not fraction or fraction.isdigit())
    ok = ok and (not zone or (len(zone) == 5 and zone[1:].isdigit()))
    if not ok or (len(digits) >= 6 and not 1 <= int(digits[4:6]) <= 12):
        if segment is not None:
            raise segment.error(n, "102", f"{segment.name}-{n} '{value}' is not a date/time (YYYYMMDD[HHMM[SS]])")
        return None
    y, mo, d, h, mi, s = digits[:4], digits[4:6], digits[6:8], digits[8:10], digits[10:12], digits[12:14]
    if len(digits) <= 8:
        return "-".join(x for x in (y, mo, d) if x)
    tz = "Z" if not zone or zone in ("+0000", "-0000") else f"{zone[:3]}:{zone[3:]}"
    seconds = f"{s or '00'}" + (f".{fraction}" if fraction else "")
    return f"{y}-{mo}-{d}T{h}:{mi or '00'}:{seconds}{tz}"


def date_only(value: str, segment: Segment | None = None, n: int = 0) -> str | None:
    found = date_time(value, segment, n)
    return found[:10] if found else None


def practitioner_display(xcn: list[str]) -> dict[str, Any] | None:
    """XCN -> a Reference by identifier and display (the IG makes a Practitioner; we do not invent one)."""
    name = " ".join(x for x in (xcn[5], xcn[2], xcn[1]) if x)
    if not (xcn[0] or name):
        return None
    ref: dict[str, Any] = {}
    if xcn[0]:
        system = "http://hl7.org/fhir/sid/us-npi" if xcn[8] == "NPI" or xcn[12] == "NPI" else None
        ref["identifier"] = {"value": xcn[0], **({"system": system} if system else {})}
    if name:
        ref["display"] = name
    return ref


GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other", "N": "unknown"}


def gender(segment: Segment, n: int) -> str | None:
    value = segment.get(n)
    if not value:
        return None
    if value not in GENDER:
        raise segment.error(
            n, "103", f"{segment.name}-{n} '{value}' is not an administrative sex (table 0001: M F O U A N)"
        )
    return GENDER[value]


def require(segment: Segment, n: int, what: str) -> str:
    value = segment.get(n)
    if not value:
        raise segment.error(n, "101", f"{segment.name}-{n} ({what}) is required")
    return value
