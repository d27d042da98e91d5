"""The search parameter registry covers FHIR R4 for the clinical types we serve, and every one indexes.

The expected codes are FHIR R4 (4.0.1)'s search parameters for each type, as
listed on each resource's Search Parameters section.  Each type also gets a
small, realistic resource: it must validate, index without error, and produce
index rows for the parameters it has values for.
"""

from __future__ import annotations

import pytest

from sandbox.fhir.search_params import registry
from sandbox.fhir.validation import validate
from sandbox.store.indexer import index_resource

COMMON = {"_id", "_lastUpdated", "_profile", "_security", "_source", "_tag"}

R4_PARAMETERS: dict[str, str] = {
    "Patient": "active address address-city address-country address-postalcode address-state address-use birthdate "
    "death-date deceased email family gender general-practitioner given identifier language link name organization "
    "phone phonetic telecom",
    "Practitioner": "active address address-city address-country address-postalcode address-state address-use "
    "communication email family gender given identifier name phone phonetic telecom",
    "PractitionerRole": "active date email endpoint identifier location organization phone practitioner role service "
    "specialty telecom",
    "Organization": "active address address-city address-country address-postalcode address-state address-use "
    "endpoint identifier name partof phonetic type",
    "Location": "address address-city address-country address-postalcode address-state address-use endpoint "
    "identifier name near operational-status organization partof status type",
    "Encounter": "account appointment based-on class date diagnosis episode-of-care identifier length location "
    "location-period part-of participant participant-type patient practitioner reason-code reason-reference "
    "service-provider special-arrangement status subject type",
    "EpisodeOfCare": "care-manager condition date identifier incoming-referral organization patient status type",
    "Condition": "abatement-age abatement-date abatement-string asserter body-site category clinical-status code "
    "encounter evidence evidence-detail identifier onset-age onset-date onset-info patient recorded-date severity "
    "stage subject verification-status",
    "Observation": "based-on category code code-value-concept code-value-date code-value-quantity code-value-string "
    "combo-code combo-code-value-concept combo-code-value-quantity combo-data-absent-reason combo-value-concept "
    "combo-value-quantity component-code component-code-value-concept component-code-value-quantity "
    "component-data-absent-reason component-value-concept component-value-quantity data-absent-reason date "
    "derived-from device encounter focus has-member identifier method part-of patient performer specimen status "
    "subject value-concept value-date value-quantity value-string",
    "AllergyIntolerance": "asserter category clinical-status code criticality date identifier last-date "
    "manifestation onset patient recorder route severity type verification-status",
    "Medication": "code expiration-date form identifier ingredient ingredient-code lot-number manufacturer status",
    "MedicationRequest": "authoredon category code date encounter identifier intended-dispenser intended-performer "
    "intended-performertype intent medication patient priority requester status subject",
    "MedicationStatement": "category code context effective identifier medication part-of patient source status "
    "subject",
    "MedicationAdministration": "code context device effective-time identifier medication patient performer "
    "reason-given reason-not-given request status subject",
    "Immunization": "date identifier location lot-number manufacturer patient performer reaction reaction-date "
    "reason-code reason-reference series status status-reason target-disease vaccine-code",
    "Procedure": "based-on category code date encounter identifier instantiates-canonical instantiates-uri location "
    "part-of patient performer reason-code reason-reference status subject",
    "DiagnosticReport": "based-on category code conclusion date encounter identifier issued media patient performer "
    "result results-interpreter specimen status subject",
    "DocumentReference": "authenticator author category contenttype custodian date description encounter event "
    "facility format identifier language location patient period related relatesto relation relationship "
    "security-label setting status subject type",
    "Composition": "attester author category confidentiality context date encounter entry identifier patient period "
    "related-id related-ref section status subject title type",
    "ServiceRequest": "authored based-on body-site category code encounter identifier instantiates-canonical "
    "instantiates-uri intent occurrence order-detail patient performer performer-type priority replaces requester "
    "requisition specimen status subject",
    "Task": "authored-on based-on business-status code encounter focus group-identifier identifier intent modified "
    "owner part-of patient performer period priority requester status subject",
    "CarePlan": "activity-code activity-date activity-reference based-on care-team category condition date "
    "encounter goal identifier instantiates-canonical instantiates-uri intent part-of patient performer replaces "
    "status subject",
    "CareTeam": "category date encounter identifier participant patient status subject",
    "Goal": "achievement-status category identifier lifecycle-status patient start-date subject target-date",
    "Coverage": "beneficiary class-type class-value dependent identifier patient payor policy-holder status "
    "subscriber type",
    "Appointment": "actor appointment-type based-on date identifier location part-status patient practitioner "
    "reason-code reason-reference service-category service-type slot specialty status supporting-info",
    "Schedule": "active actor date identifier service-category service-type specialty",
    "Slot": "appointment-type identifier schedule service-category service-type specialty start status",
    "Communication": "based-on category encounter identifier instantiates-canonical instantiates-uri medium part-of "
    "patient received recipient sender sent status subject",
    "Questionnaire": "code context context-quantity context-type context-type-quantity context-type-value date "
    "definition description effective identifier jurisdiction name publisher status subject-type title url version",
    "QuestionnaireResponse": "author authored based-on encounter identifier part-of patient questionnaire source "
    "status subject",
    "Device": "device-name identifier location manufacturer model organization patient status type udi-carrier "
    "udi-di url",
    "Specimen": "accession bodysite collected collector container container-id identifier parent patient status "
    "subject type",
    "Provenance": "agent agent-role agent-type entity location patient recorded signature-type target when",
    "AuditEvent": "action address agent agent-name agent-role altid date entity entity-name entity-role entity-type "
    "outcome patient policy site source subtype type",
    "Subscription": "contact criteria payload status type url",
    "Group": "actual characteristic characteristic-value code exclude identifier managing-entity member type value",
    "List": "code date empty-reason encounter identifier item notes patient source status subject title",
}
# Location's "near" is a special-type parameter (geographic distance), which this server does not offer.
NOT_OFFERED = {("Location", "near")}


@pytest.mark.parametrize("rtype", sorted(R4_PARAMETERS))
def test_every_r4_parameter_of_the_type_is_registered(rtype):
    expected = set(R4_PARAMETERS[rtype].split()) | COMMON
    expected -= {code for t, code in NOT_OFFERED if t == rtype}
    registered = set(registry().params(rtype))
    assert expected - registered == set()
    for code in registered - COMMON:
        param = registry().get(rtype, code)
        assert param is not None and param.type in {
            "string", "token", "reference", "date", "number", "quantity", "uri", "composite",
        }  # fmt: skip
        if param.type == "reference":
            assert param.targets, code
        if param.type == "composite":
            assert len(param.components) >= 2, code


LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
PAT = {"reference": "Patient/p1"}
DOC = {"reference": "Practitioner/d1"}
ENC = {"reference": "Encounter/e1"}
ORG = {"reference": "Organization/o1"}


def _cc(system: str, code: str, display: str = "") -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": display or code}


EXAMPLES: dict[str, tuple[dict, set[str]]] = {
    "Patient": (
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "1"}],
            "active": True,
            "name": [{"family": "Ng", "given": ["Ann"]}],
            "telecom": [{"system": "phone", "value": "555"}],
            "gender": "female",
            "birthDate": "1980-02-03",
            "deceasedBoolean": False,
            "address": [{"city": "Boston", "state": "MA", "postalCode": "02110", "country": "US"}],
            "generalPractitioner": [DOC],
            "managingOrganization": ORG,
        },
        {
            "name",
            "family",
            "given",
            "birthdate",
            "gender",
            "identifier",
            "phone",
            "address-city",
            "organization",
            "general-practitioner",
            "active",
            "deceased",
        },
    ),
    "Practitioner": (
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
            "name": [{"family": "House", "prefix": ["Dr"]}],
            "gender": "male",
            "communication": [_cc("urn:ietf:bcp:47", "en")],
        },
        {"identifier", "name", "family", "gender", "communication"},
    ),
    "PractitionerRole": (
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": DOC,
            "organization": ORG,
            "code": [_cc(SNOMED, "158965000", "Doctor")],
            "specialty": [_cc(SNOMED, "394814009")],
            "location": [{"reference": "Location/l1"}],
            "period": {"start": "2020-01-01"},
        },
        {"practitioner", "organization", "role", "specialty", "location", "date", "active"},
    ),
    "Organization": (
        {
            "resourceType": "Organization",
            "name": "Acme Health",
            "type": [_cc("http://terminology.hl7.org/CodeSystem/organization-type", "prov")],
            "address": [{"city": "Boston"}],
            "partOf": ORG,
        },
        {"name", "type", "address-city", "partof"},
    ),
    "Location": (
        {
            "resourceType": "Location",
            "status": "active",
            "name": "Ward 3",
            "address": {"city": "Boston"},
            "managingOrganization": ORG,
            "partOf": {"reference": "Location/l0"},
            "position": {"longitude": -71.06, "latitude": 42.36},
        },
        {"status", "name", "address-city", "organization", "partof"},
    ),
    "Encounter": (
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "type": [_cc(SNOMED, "185349003")],
            "subject": PAT,
            "participant": [
                {"individual": DOC, "type": [_cc("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "ATND")]}
            ],
            "period": {"start": "2024-01-02T10:00:00Z", "end": "2024-01-02T10:30:00Z"},
            "length": {"value": 30, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"},
            "reasonCode": [_cc(SNOMED, "386661006", "Fever")],
            "serviceProvider": ORG,
            "location": [{"location": {"reference": "Location/l1"}, "period": {"start": "2024-01-02T10:00:00Z"}}],
        },
        {
            "status",
            "class",
            "type",
            "subject",
            "patient",
            "participant",
            "practitioner",
            "date",
            "length",
            "reason-code",
            "service-provider",
            "location",
            "location-period",
            "participant-type",
        },
    ),
    "EpisodeOfCare": (
        {
            "resourceType": "EpisodeOfCare",
            "status": "active",
            "patient": PAT,
            "managingOrganization": ORG,
            "period": {"start": "2024-01-01"},
            "careManager": DOC,
            "type": [_cc(SNOMED, "hacc")],
        },
        {"status", "patient", "organization", "date", "care-manager", "type"},
    ),
    "Condition": (
        {
            "resourceType": "Condition",
            "clinicalStatus": _cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "verificationStatus": _cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"),
            "category": [_cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")],
            "code": _cc(SNOMED, "44054006", "Diabetes"),
            "subject": PAT,
            "encounter": ENC,
            "onsetDateTime": "2019-05-01",
            "recordedDate": "2019-05-02",
            "asserter": DOC,
            "severity": _cc(SNOMED, "24484000"),
        },
        {
            "clinical-status",
            "verification-status",
            "category",
            "code",
            "subject",
            "patient",
            "encounter",
            "onset-date",
            "recorded-date",
            "asserter",
            "severity",
        },
    ),
    "Observation": (
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [_cc("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")],
            "code": _cc(LOINC, "85354-9", "Blood pressure"),
            "subject": PAT,
            "encounter": ENC,
            "effectiveDateTime": "2024-01-02T10:05:00Z",
            "performer": [DOC],
            "component": [
                {
                    "code": _cc(LOINC, "8480-6"),
                    "valueQuantity": {
                        "value": 120,
                        "unit": "mmHg",
                        "system": "http://unitsofmeasure.org",
                        "code": "mm[Hg]",
                    },
                },
                {
                    "code": _cc(LOINC, "8462-4"),
                    "valueQuantity": {
                        "value": 80,
                        "unit": "mmHg",
                        "system": "http://unitsofmeasure.org",
                        "code": "mm[Hg]",
                    },
                },
            ],
        },
        {
            "status",
            "category",
            "code",
            "subject",
            "patient",
            "encounter",
            "date",
            "performer",
            "component-code",
            "component-value-quantity",
            "combo-code",
            "component-code-value-quantity$0",
            "combo-value-quantity",
        },
    ),
    "AllergyIntolerance": (
        {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": _cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
            "type": "allergy",
            "category": ["medication"],
            "criticality": "high",
            "code": _cc("http://www.nlm.nih.gov/research/umls/rxnorm", "7980", "Penicillin"),
            "patient": PAT,
            "recordedDate": "2020-01-01",
            "recorder": DOC,
            "reaction": [{"manifestation": [_cc(SNOMED, "247472004", "Hives")], "severity": "moderate"}],
        },
        {
            "clinical-status",
            "type",
            "category",
            "criticality",
            "code",
            "patient",
            "date",
            "recorder",
            "manifestation",
            "severity",
        },
    ),
    "Medication": (
        {
            "resourceType": "Medication",
            "code": _cc("http://www.nlm.nih.gov/research/umls/rxnorm", "1049502"),
            "status": "active",
            "manufacturer": ORG,
            "form": _cc(SNOMED, "385055001"),
            "ingredient": [{"itemCodeableConcept": _cc("http://www.nlm.nih.gov/research/umls/rxnorm", "7052")}],
            "batch": {"lotNumber": "L1", "expirationDate": "2027-01-01"},
        },
        {"code", "status", "manufacturer", "form", "ingredient-code", "lot-number", "expiration-date"},
    ),
    "MedicationRequest": (
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "priority": "routine",
            "medicationCodeableConcept": _cc("http://www.nlm.nih.gov/research/umls/rxnorm", "1049502"),
            "subject": PAT,
            "encounter": ENC,
            "authoredOn": "2024-01-02",
            "requester": DOC,
            "dosageInstruction": [{"timing": {"event": ["2024-01-03T08:00:00Z"]}}],
        },
        {"status", "intent", "priority", "code", "subject", "patient", "encounter", "authoredon", "requester", "date"},
    ),
    "MedicationStatement": (
        {
            "resourceType": "MedicationStatement",
            "status": "active",
            "medicationReference": {"reference": "Medication/m1"},
            "subject": PAT,
            "effectivePeriod": {"start": "2023-01-01"},
            "informationSource": DOC,
            "context": ENC,
        },
        {"status", "medication", "subject", "patient", "effective", "source", "context"},
    ),
    "MedicationAdministration": (
        {
            "resourceType": "MedicationAdministration",
            "status": "completed",
            "medicationCodeableConcept": _cc("http://www.nlm.nih.gov/research/umls/rxnorm", "1049502"),
            "subject": PAT,
            "context": ENC,
            "effectiveDateTime": "2024-01-02T09:00:00Z",
            "performer": [{"actor": DOC}],
            "request": {"reference": "MedicationRequest/mr1"},
        },
        {"status", "code", "subject", "patient", "context", "effective-time", "performer", "request"},
    ),
    "Immunization": (
        {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": _cc("http://hl7.org/fhir/sid/cvx", "140", "Influenza"),
            "patient": PAT,
            "occurrenceDateTime": "2023-10-01",
            "lotNumber": "A1",
            "manufacturer": ORG,
            "performer": [{"actor": DOC}],
            "location": {"reference": "Location/l1"},
            "protocolApplied": [
                {"series": "2023", "doseNumberPositiveInt": 1, "targetDisease": [_cc(SNOMED, "6142004")]}
            ],
        },
        {
            "status",
            "vaccine-code",
            "patient",
            "date",
            "lot-number",
            "manufacturer",
            "performer",
            "location",
            "series",
            "target-disease",
        },
    ),
    "Procedure": (
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": _cc(SNOMED, "80146002", "Appendectomy"),
            "subject": PAT,
            "encounter": ENC,
            "performedPeriod": {"start": "2024-01-02T11:00:00Z", "end": "2024-01-02T12:00:00Z"},
            "performer": [{"actor": DOC}],
            "reasonCode": [_cc(SNOMED, "74400008")],
            "location": {"reference": "Location/l1"},
            "category": _cc(SNOMED, "387713003"),
        },
        {
            "status",
            "code",
            "subject",
            "patient",
            "encounter",
            "date",
            "performer",
            "reason-code",
            "location",
            "category",
        },
    ),
    "DiagnosticReport": (
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "category": [_cc("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB")],
            "code": _cc(LOINC, "58410-2", "CBC panel"),
            "subject": PAT,
            "encounter": ENC,
            "effectiveDateTime": "2024-01-02",
            "issued": "2024-01-02T15:00:00Z",
            "performer": [ORG],
            "result": [{"reference": "Observation/ob1"}],
            "conclusion": "Normal",
            "conclusionCode": [_cc(SNOMED, "281900007")],
        },
        {
            "status",
            "category",
            "code",
            "subject",
            "patient",
            "encounter",
            "date",
            "issued",
            "performer",
            "result",
            "conclusion",
        },
    ),
    "DocumentReference": (
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": _cc(LOINC, "34133-9"),
            "category": [
                _cc("http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "clinical-note")
            ],
            "subject": PAT,
            "date": "2024-01-02T10:00:00Z",
            "author": [DOC],
            "custodian": ORG,
            "description": "Discharge summary",
            "content": [
                {"attachment": {"contentType": "text/plain", "language": "en", "url": "http://example.org/doc.txt"}}
            ],
            "context": {"encounter": [ENC], "period": {"start": "2024-01-01"}},
        },
        {
            "status",
            "type",
            "category",
            "subject",
            "patient",
            "date",
            "author",
            "custodian",
            "description",
            "contenttype",
            "encounter",
            "period",
            "location",
        },
    ),
    "Composition": (
        {
            "resourceType": "Composition",
            "status": "final",
            "type": _cc(LOINC, "11488-4", "Consult note"),
            "subject": PAT,
            "encounter": ENC,
            "date": "2024-01-02T10:00:00Z",
            "author": [DOC],
            "title": "Consult note",
            "section": [{"title": "Plan", "code": _cc(LOINC, "18776-5"), "entry": [{"reference": "Condition/c1"}]}],
        },
        {"status", "type", "subject", "patient", "encounter", "date", "author", "title", "section", "entry"},
    ),
    "ServiceRequest": (
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "priority": "urgent",
            "category": [_cc(SNOMED, "108252007")],
            "code": _cc(LOINC, "24323-8", "CMP"),
            "subject": PAT,
            "encounter": ENC,
            "occurrenceDateTime": "2024-01-03",
            "authoredOn": "2024-01-02",
            "requester": DOC,
            "performer": [ORG],
            "requisition": {"system": "urn:req", "value": "R1"},
        },
        {
            "status",
            "intent",
            "priority",
            "category",
            "code",
            "subject",
            "patient",
            "encounter",
            "occurrence",
            "authored",
            "requester",
            "performer",
            "requisition",
        },
    ),
    "Task": (
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "priority": "routine",
            "code": _cc("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
            "focus": {"reference": "ServiceRequest/s1"},
            "for": PAT,
            "encounter": ENC,
            "authoredOn": "2024-01-02T10:00:00Z",
            "lastModified": "2024-01-02T11:00:00Z",
            "requester": DOC,
            "owner": ORG,
            "executionPeriod": {"start": "2024-01-02"},
        },
        {
            "status",
            "intent",
            "priority",
            "code",
            "focus",
            "subject",
            "patient",
            "encounter",
            "authored-on",
            "modified",
            "requester",
            "owner",
            "period",
        },
    ),
    "CarePlan": (
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "category": [_cc(SNOMED, "734163000")],
            "subject": PAT,
            "encounter": ENC,
            "period": {"start": "2024-01-01"},
            "careTeam": [{"reference": "CareTeam/ct1"}],
            "addresses": [{"reference": "Condition/c1"}],
            "goal": [{"reference": "Goal/g1"}],
            "activity": [
                {"detail": {"status": "scheduled", "code": _cc(SNOMED, "229065009"), "scheduledString": "daily"}}
            ],
        },
        {
            "status",
            "intent",
            "category",
            "subject",
            "patient",
            "encounter",
            "date",
            "care-team",
            "condition",
            "goal",
            "activity-code",
        },
    ),
    "CareTeam": (
        {
            "resourceType": "CareTeam",
            "status": "active",
            "category": [_cc(LOINC, "LA27976-2")],
            "subject": PAT,
            "encounter": ENC,
            "period": {"start": "2024-01-01"},
            "participant": [{"member": DOC}],
        },
        {"status", "category", "subject", "patient", "encounter", "date", "participant"},
    ),
    "Goal": (
        {
            "resourceType": "Goal",
            "lifecycleStatus": "active",
            "achievementStatus": _cc("http://terminology.hl7.org/CodeSystem/goal-achievement", "in-progress"),
            "category": [_cc("http://terminology.hl7.org/CodeSystem/goal-category", "dietary")],
            "description": {"text": "Lose weight"},
            "subject": PAT,
            "startDate": "2024-01-01",
            "target": [{"dueDate": "2024-06-01"}],
        },
        {"lifecycle-status", "achievement-status", "category", "subject", "patient", "start-date", "target-date"},
    ),
    "Coverage": (
        {
            "resourceType": "Coverage",
            "status": "active",
            "type": _cc("http://terminology.hl7.org/CodeSystem/v3-ActCode", "EHCPOL"),
            "subscriber": PAT,
            "beneficiary": PAT,
            "policyHolder": PAT,
            "dependent": "01",
            "payor": [ORG],
            "class": [{"type": _cc("http://terminology.hl7.org/CodeSystem/coverage-class", "group"), "value": "G1"}],
        },
        {
            "status",
            "type",
            "subscriber",
            "beneficiary",
            "patient",
            "policy-holder",
            "dependent",
            "payor",
            "class-type",
            "class-value",
        },
    ),
    "Appointment": (
        {
            "resourceType": "Appointment",
            "status": "booked",
            "serviceType": [_cc(SNOMED, "394814009")],
            "appointmentType": _cc("http://terminology.hl7.org/CodeSystem/v2-0276", "ROUTINE"),
            "start": "2024-02-01T09:00:00Z",
            "end": "2024-02-01T09:30:00Z",
            "slot": [{"reference": "Slot/s1"}],
            "participant": [{"actor": PAT, "status": "accepted"}, {"actor": DOC, "status": "accepted"}],
        },
        {
            "status",
            "service-type",
            "appointment-type",
            "date",
            "slot",
            "actor",
            "patient",
            "practitioner",
            "part-status",
        },
    ),
    "Schedule": (
        {
            "resourceType": "Schedule",
            "active": True,
            "actor": [DOC],
            "serviceType": [_cc(SNOMED, "394814009")],
            "planningHorizon": {"start": "2024-02-01", "end": "2024-02-28"},
        },
        {"active", "actor", "service-type", "date"},
    ),
    "Slot": (
        {
            "resourceType": "Slot",
            "schedule": {"reference": "Schedule/sc1"},
            "status": "free",
            "start": "2024-02-01T09:00:00Z",
            "end": "2024-02-01T09:30:00Z",
            "serviceType": [_cc(SNOMED, "394814009")],
        },
        {"schedule", "status", "start", "service-type"},
    ),
    "Communication": (
        {
            "resourceType": "Communication",
            "status": "completed",
            "category": [_cc("http://terminology.hl7.org/CodeSystem/communication-category", "notification")],
            "subject": PAT,
            "encounter": ENC,
            "sent": "2024-01-02T10:00:00Z",
            "received": "2024-01-02T10:01:00Z",
            "recipient": [DOC],
            "sender": ORG,
            "payload": [{"contentString": "Results ready"}],
        },
        {"status", "category", "subject", "patient", "encounter", "sent", "received", "recipient", "sender"},
    ),
    "Questionnaire": (
        {
            "resourceType": "Questionnaire",
            "url": "http://example.org/Questionnaire/phq2",
            "version": "1",
            "name": "PHQ2",
            "title": "PHQ-2",
            "status": "active",
            "date": "2024-01-01",
            "publisher": "Example",
            "subjectType": ["Patient"],
            "item": [
                {
                    "linkId": "1",
                    "text": "Little interest?",
                    "type": "choice",
                    "code": [{"system": LOINC, "code": "44250-9"}],
                }
            ],
        },
        {"url", "version", "name", "title", "status", "date", "publisher", "code", "subject-type"},
    ),
    "QuestionnaireResponse": (
        {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": "http://example.org/Questionnaire/phq2",
            "status": "completed",
            "subject": PAT,
            "encounter": ENC,
            "authored": "2024-01-02T10:00:00Z",
            "author": DOC,
            "source": PAT,
            "item": [{"linkId": "1", "answer": [{"valueCoding": {"system": LOINC, "code": "LA6568-5"}}]}],
        },
        {"questionnaire", "status", "subject", "patient", "encounter", "authored", "author", "source"},
    ),
    "Device": (
        {
            "resourceType": "Device",
            "status": "active",
            "udiCarrier": [{"deviceIdentifier": "0088442"}],
            "manufacturer": "Acme",
            "deviceName": [{"name": "Pump", "type": "user-friendly-name"}],
            "modelNumber": "P-1",
            "type": _cc(SNOMED, "706172005"),
            "patient": PAT,
            "owner": ORG,
            "location": {"reference": "Location/l1"},
            "url": "http://example.org/device",
        },
        {
            "status",
            "udi-di",
            "manufacturer",
            "device-name",
            "model",
            "type",
            "patient",
            "organization",
            "location",
            "url",
        },
    ),
    "Specimen": (
        {
            "resourceType": "Specimen",
            "status": "available",
            "accessionIdentifier": {"value": "A-1"},
            "type": _cc("http://terminology.hl7.org/CodeSystem/v2-0487", "BLD"),
            "subject": PAT,
            "collection": {
                "collector": DOC,
                "collectedDateTime": "2024-01-02T08:00:00Z",
                "bodySite": _cc(SNOMED, "49852007"),
            },
            "container": [{"identifier": [{"value": "C-1"}], "type": _cc(SNOMED, "702281005")}],
        },
        {
            "status",
            "accession",
            "type",
            "subject",
            "patient",
            "collector",
            "collected",
            "bodysite",
            "container-id",
            "container",
        },
    ),
    "Provenance": (
        {
            "resourceType": "Provenance",
            "target": [{"reference": "Observation/ob1"}],
            "recorded": "2024-01-02T10:00:00Z",
            "occurredDateTime": "2024-01-02T09:59:00Z",
            "location": {"reference": "Location/l1"},
            "agent": [
                {
                    "type": _cc("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author"),
                    "who": DOC,
                    "role": [_cc("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "AUT")],
                }
            ],
            "entity": [{"role": "source", "what": {"reference": "DocumentReference/d1"}}],
        },
        {"target", "recorded", "when", "location", "agent", "agent-type", "agent-role", "entity"},
    ),
    "AuditEvent": (
        {
            "resourceType": "AuditEvent",
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
            "action": "R",
            "recorded": "2024-01-02T10:00:00Z",
            "outcome": "0",
            "agent": [{"who": DOC, "requestor": True, "altId": "nurse1", "name": "Nurse One"}],
            "source": {"site": "ehr", "observer": ORG},
            "entity": [
                {
                    "what": PAT,
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                    "name": "chart",
                }
            ],
        },
        {
            "type",
            "action",
            "date",
            "outcome",
            "agent",
            "altid",
            "agent-name",
            "site",
            "source",
            "entity",
            "entity-type",
            "entity-name",
            "patient",
        },
    ),
    "Subscription": (
        {
            "resourceType": "Subscription",
            "status": "active",
            "reason": "Watch labs",
            "criteria": "Observation?category=laboratory",
            "contact": [{"system": "email", "value": "a@b.org"}],
            "channel": {
                "type": "rest-hook",
                "endpoint": "https://example.org/hook",
                "payload": "application/fhir+json",
            },
        },
        {"status", "criteria", "contact", "type", "url", "payload"},
    ),
    "Group": (
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "code": _cc(SNOMED, "125676002"),
            "managingEntity": ORG,
            "member": [{"entity": PAT}],
            "characteristic": [
                {"code": _cc(SNOMED, "263495000"), "valueCodeableConcept": _cc(SNOMED, "248152002"), "exclude": False}
            ],
        },
        {
            "type",
            "actual",
            "code",
            "managing-entity",
            "member",
            "characteristic",
            "value",
            "exclude",
            "characteristic-value$0",
        },
    ),
    "List": (
        {
            "resourceType": "List",
            "status": "current",
            "mode": "working",
            "title": "Problem list",
            "code": _cc(LOINC, "11450-4"),
            "subject": PAT,
            "encounter": ENC,
            "date": "2024-01-02",
            "source": DOC,
            "entry": [{"item": {"reference": "Condition/c1"}}],
            "note": [{"text": "Reviewed"}],
        },
        {"status", "title", "code", "subject", "patient", "encounter", "date", "source", "item", "notes"},
    ),
}


def test_every_listed_type_has_an_example():
    assert set(EXAMPLES) == set(R4_PARAMETERS)


@pytest.mark.parametrize("rtype", sorted(EXAMPLES))
def test_a_realistic_example_validates_and_indexes(rtype):
    resource, expected = EXAMPLES[rtype]
    resource = {**resource, "id": "x1", "meta": {"tag": [{"system": "http://example.org/tags", "code": "demo"}]}}
    validate(resource)
    rows = index_resource(registry(), resource)
    indexed = {row["param"] for kind in rows.values() for row in kind}
    assert expected - indexed == set()
    assert "_tag" in indexed
