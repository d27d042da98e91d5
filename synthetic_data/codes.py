"""The terminology the generator speaks: code systems, and the clinical knowledge tied to codes.

Each chronic condition carries what follows from it in a chart: its SNOMED CT
code, its prevalence by age band and sex, the RxNorm medications that treat
it, the LOINC labs that monitor it, and how it moves vital signs.  The rest of
the generator reads these tables; nothing else holds clinical codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
MRN_SYSTEM = "urn:ehr-sandbox:mrn"
MEMBER_SYSTEM = "urn:ehr-sandbox:member-id"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
PAYER_TYPE = "urn:oid:2.16.840.1.113883.3.221.5"  # Source of Payment Typology (PHDSC)
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
MARITAL_STATUS = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
NUCC_TAXONOMY = "http://nucc.org/provider-taxonomy"
REQUEST_CATEGORY = "http://snomed.info/sct"

Code = tuple[str, str]  # (code, display)

# 555-0100 to 555-0199 are reserved for fiction in the North American numbering plan: no one answers.
FICTIONAL_PHONE = "%##-555-01##"


@dataclass(frozen=True)
class Medication:
    rxnorm: str
    display: str
    dosage: str  # patient instruction text
    per_day: int  # administrations a day, for Timing.repeat


@dataclass(frozen=True)
class Lab:
    loinc: str
    display: str
    unit: str  # UCUM
    low: float  # range drawn from for a patient *with* the condition being monitored
    high: float
    decimals: int = 0


@dataclass(frozen=True)
class Chronic:
    """A chronic condition and everything that follows from it in the chart."""

    key: str
    snomed: str
    display: str
    # Prevalence by age band: ((min_age, max_age_exclusive), probability), per sex where it differs.
    prevalence: tuple[tuple[int, int, float], ...]
    female_factor: float = 1.0  # multiplies the prevalence for women
    medications: tuple[Medication, ...] = ()
    labs: tuple[str, ...] = ()  # keys into LAB_PANELS: drawn at follow-ups
    follow_up_months: int = 6
    specialty: str | None = None  # a referral target for this condition (PractitionerRole specialty key)
    referral_rate: float = 0.0  # share of patients diagnosed in the window who are referred to it
    procedures: tuple[Code, ...] = ()  # done once at diagnosis, if diagnosed in the window


MED = {
    "lisinopril": Medication("314076", "lisinopril 10 MG Oral Tablet", "Take 1 tablet by mouth once daily", 1),
    "amlodipine": Medication("197361", "amlodipine 5 MG Oral Tablet", "Take 1 tablet by mouth once daily", 1),
    "hctz": Medication("310798", "Hydrochlorothiazide 25 MG Oral Tablet", "Take 1 tablet by mouth every morning", 1),
    "metformin": Medication(
        "860975",
        "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
        "Take 1 tablet by mouth twice daily with meals",
        2,
    ),
    "atorvastatin": Medication("617310", "atorvastatin 20 MG Oral Tablet", "Take 1 tablet by mouth at bedtime", 1),
    "albuterol": Medication(
        "745679",
        "200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        "Inhale 2 puffs every 4 to 6 hours as needed for wheezing",
        4,
    ),
    "fluticasone": Medication(
        "895994",
        "120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
        "Inhale 2 puffs twice daily; rinse mouth after use",
        2,
    ),
    "furosemide": Medication("313988", "Furosemide 40 MG Oral Tablet", "Take 1 tablet by mouth every morning", 1),
    "apixaban": Medication("1364445", "apixaban 5 MG Oral Tablet", "Take 1 tablet by mouth twice daily", 2),
    "sertraline": Medication("312940", "sertraline 50 MG Oral Tablet", "Take 1 tablet by mouth once daily", 1),
    "acetaminophen": Medication(
        "313782", "Acetaminophen 325 MG Oral Tablet", "Take 2 tablets by mouth every 6 hours as needed for pain", 4
    ),
    "naproxen": Medication(
        "849574", "Naproxen sodium 220 MG Oral Tablet", "Take 1 tablet by mouth twice daily with food as needed", 2
    ),
    "amoxicillin": Medication(
        "308182", "Amoxicillin 250 MG Oral Capsule", "Take 2 capsules by mouth three times daily for 10 days", 3
    ),
    "azithromycin": Medication(
        "141918", "Azithromycin 250 MG Oral Tablet", "Take 2 tablets on day 1, then 1 tablet daily for 4 days", 1
    ),
    "smx_tmp": Medication(
        "198335",
        "Sulfamethoxazole 800 MG / Trimethoprim 160 MG Oral Tablet",
        "Take 1 tablet by mouth twice daily for 3 days",
        2,
    ),
    "ibuprofen": Medication(
        "197806", "Ibuprofen 600 MG Oral Tablet", "Take 1 tablet by mouth every 8 hours with food as needed", 3
    ),
}

CHRONIC: tuple[Chronic, ...] = (
    Chronic(
        "hypertension",
        "38341003",
        "Hypertensive disorder, systemic arterial (disorder)",
        ((18, 40, 0.075), (40, 60, 0.33), (60, 130, 0.63)),
        medications=(MED["lisinopril"], MED["amlodipine"], MED["hctz"]),
        labs=("bmp",),
    ),
    Chronic(
        "diabetes",
        "44054006",
        "Diabetes mellitus type 2 (disorder)",
        ((18, 45, 0.04), (45, 65, 0.145), (65, 130, 0.25)),
        medications=(MED["metformin"],),
        labs=("hba1c", "bmp", "uacr"),
        follow_up_months=3,
        specialty="endocrinology",
        referral_rate=0.25,
    ),
    Chronic(
        "hyperlipidemia",
        "55822004",
        "Hyperlipidemia (disorder)",
        ((20, 40, 0.10), (40, 60, 0.30), (60, 130, 0.45)),
        medications=(MED["atorvastatin"],),
        labs=("lipids",),
        follow_up_months=12,
    ),
    Chronic(
        "asthma",
        "195967001",
        "Asthma (disorder)",
        ((2, 18, 0.065), (18, 130, 0.08)),
        female_factor=1.3,
        medications=(MED["albuterol"], MED["fluticasone"]),
        follow_up_months=12,
        procedures=(("127783003", "Spirometry (procedure)"),),
    ),
    Chronic(
        "copd",
        "13645005",
        "Chronic obstructive lung disease (disorder)",
        ((40, 55, 0.04), (55, 65, 0.09), (65, 130, 0.12)),
        medications=(MED["albuterol"],),
        labs=("fev1",),
        follow_up_months=6,
        specialty="pulmonology",
        referral_rate=0.5,
        procedures=(("127783003", "Spirometry (procedure)"),),
    ),
    Chronic(
        "ckd",
        "433144002",
        "Chronic kidney disease stage 3 (disorder)",
        ((30, 45, 0.03), (45, 65, 0.10), (65, 130, 0.30)),
        labs=("bmp", "uacr"),
        specialty="nephrology",
        referral_rate=0.5,
    ),
    Chronic(
        "heart_failure",
        "84114007",
        "Heart failure (disorder)",
        ((45, 65, 0.015), (65, 80, 0.06), (80, 130, 0.12)),
        medications=(MED["furosemide"], MED["lisinopril"]),
        labs=("bnp", "bmp"),
        follow_up_months=3,
        specialty="cardiology",
        referral_rate=0.9,
        procedures=(("40701008", "Echocardiography (procedure)"),),
    ),
    Chronic(
        "depression",
        "35489007",
        "Depressive disorder (disorder)",
        ((12, 18, 0.06), (18, 130, 0.07)),
        female_factor=1.7,
        medications=(MED["sertraline"],),
        labs=("phq9",),
        follow_up_months=3,
    ),
    Chronic(
        "obesity",
        "414916001",
        "Obesity (disorder)",
        ((18, 40, 0.40), (40, 60, 0.44), (60, 130, 0.41)),
        follow_up_months=12,
    ),
    Chronic(
        "atrial_fibrillation",
        "49436004",
        "Atrial fibrillation (disorder)",
        ((45, 65, 0.015), (65, 80, 0.06), (80, 130, 0.10)),
        female_factor=0.8,
        medications=(MED["apixaban"],),
        follow_up_months=6,
        specialty="cardiology",
        referral_rate=0.8,
        procedures=(("29303009", "Electrocardiographic procedure (procedure)"),),
    ),
    Chronic(
        "osteoarthritis",
        "396275006",
        "Osteoarthritis (disorder)",
        ((40, 55, 0.10), (55, 65, 0.25), (65, 130, 0.40)),
        female_factor=1.3,
        medications=(MED["acetaminophen"], MED["naproxen"]),
        follow_up_months=12,
        specialty="orthopedics",
        referral_rate=0.3,
    ),
)
CHRONIC_BY_KEY = {c.key: c for c in CHRONIC}


@dataclass(frozen=True)
class Acute:
    key: str
    snomed: str
    display: str
    ages: tuple[int, int]
    yearly_rate: float
    days: int  # how long until resolved
    medication: str | None = None  # key into MED
    alternative: str | None = None  # when the patient is allergic to the first choice
    avoid_if_allergic: str | None = None  # allergy key that rules out ``medication``


ACUTE: tuple[Acute, ...] = (
    Acute("bronchitis", "10509002", "Acute bronchitis (disorder)", (0, 130), 0.05, 14, "ibuprofen"),
    Acute("sinusitis", "444814009", "Viral sinusitis (disorder)", (0, 130), 0.08, 10, "acetaminophen"),
    Acute(
        "strep",
        "43878008",
        "Streptococcal sore throat (disorder)",
        (3, 40),
        0.05,
        10,
        "amoxicillin",
        "azithromycin",
        "penicillin",
    ),
    Acute(
        "otitis",
        "65363002",
        "Otitis media (disorder)",
        (0, 12),
        0.15,
        10,
        "amoxicillin",
        "azithromycin",
        "penicillin",
    ),
    Acute(
        "uti",
        "68566005",
        "Urinary tract infectious disease (disorder)",
        (12, 130),
        0.04,
        7,
        "smx_tmp",
        None,
        "sulfonamide",
    ),
    Acute("sprain", "44465007", "Sprain of ankle (disorder)", (8, 70), 0.02, 21, "ibuprofen"),
)

# Lab panels: a DiagnosticReport code and its results.
LAB_PANELS: dict[str, tuple[Code, tuple[str, ...]]] = {
    "hba1c": (("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), ("4548-4",)),
    "bmp": (
        ("51990-0", "Basic metabolic panel - Blood"),
        ("2339-0", "6299-2", "38483-4", "2947-0", "6298-4", "33914-3"),
    ),
    "lipids": (
        ("57698-3", "Lipid panel with direct LDL - Serum or Plasma"),
        ("2093-3", "2571-8", "18262-6", "2085-9"),
    ),
    "uacr": (("14959-1", "Microalbumin/Creatinine [Mass Ratio] in Urine"), ("14959-1",)),
    "bnp": (
        ("33762-6", "NT-proBNP [Mass/volume] in Serum or Plasma"),
        ("33762-6",),
    ),
    "phq9": (("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"), ("44261-6",)),
    "fev1": (("19926-5", "FEV1/FVC"), ("19926-5",)),
}

# Normal ranges, and ranges that fit a condition (keyed by condition): the values a chart shows.
LABS: dict[str, Lab] = {
    "4548-4": Lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.6, 5.6, 1),
    "2339-0": Lab("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 72, 99),
    "6299-2": Lab("6299-2", "Urea nitrogen [Mass/volume] in Blood", "mg/dL", 8, 20),
    "38483-4": Lab("38483-4", "Creatinine [Mass/volume] in Blood", "mg/dL", 0.6, 1.1, 2),
    "2947-0": Lab("2947-0", "Sodium [Moles/volume] in Blood", "mmol/L", 136, 144),
    "6298-4": Lab("6298-4", "Potassium [Moles/volume] in Blood", "mmol/L", 3.6, 5.0, 1),
    "33914-3": Lab(
        "33914-3",
        "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based "
        "formula (MDRD)",
        "mL/min/{1.73_m2}",
        75,
        110,
    ),
    "2093-3": Lab("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 150, 199),
    "2571-8": Lab("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 60, 149),
    "18262-6": Lab("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL", 60, 99),
    "2085-9": Lab("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 45, 75),
    "14959-1": Lab("14959-1", "Microalbumin/Creatinine [Mass Ratio] in Urine", "mg/g", 3, 25),
    "33762-6": Lab("33762-6", "NT-proBNP [Mass/volume] in Serum or Plasma", "pg/mL", 20, 120),
    "44261-6": Lab("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]", "{score}", 0, 4),
    "19926-5": Lab("19926-5", "FEV1/FVC", "%", 72, 85),
}

# What a condition does to a lab result: (low, high) replacing the normal range.
LAB_EFFECTS: dict[str, dict[str, tuple[float, float]]] = {
    "diabetes": {"4548-4": (6.8, 9.8), "2339-0": (130, 240), "14959-1": (20, 120)},
    "ckd": {"33914-3": (32, 58), "38483-4": (1.3, 2.1), "6299-2": (22, 38), "14959-1": (35, 280)},
    "hyperlipidemia": {"2093-3": (210, 280), "18262-6": (130, 190), "2571-8": (160, 320), "2085-9": (32, 44)},
    "heart_failure": {"33762-6": (450, 3200)},
    "depression": {"44261-6": (10, 19)},
    "copd": {"19926-5": (45, 68)},
}

# Vital signs: (loinc, display, unit, decimals).
VITAL_CODES: dict[str, tuple[str, str, str, int]] = {
    "bp": ("85354-9", "Blood pressure panel with all children optional", "mm[Hg]", 0),
    "systolic": ("8480-6", "Systolic blood pressure", "mm[Hg]", 0),
    "diastolic": ("8462-4", "Diastolic blood pressure", "mm[Hg]", 0),
    "heart_rate": ("8867-4", "Heart rate", "/min", 0),
    "respiratory_rate": ("9279-1", "Respiratory rate", "/min", 0),
    "temperature": ("8310-5", "Body temperature", "Cel", 1),
    "weight": ("29463-7", "Body weight", "kg", 1),
    "height": ("8302-2", "Body height", "cm", 1),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 1),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 0),
}
SMOKING_STATUS_LOINC: Code = ("72166-2", "Tobacco smoking status")
SMOKING_VALUES: dict[str, Code] = {
    "never": ("266919005", "Never smoked tobacco (finding)"),
    "former": ("8517006", "Ex-smoker (finding)"),
    "current": ("449868002", "Smokes tobacco daily (finding)"),
}

# Code status (resuscitation status), charted as C-CDA R2.1's Advance Directive Observation is: the directive's
# type, SNOMED CT 304251008 Resuscitation, with the LOINC translation 75320-2 Advance directive that every such
# observation carries (so the SNOMED code, not the LOINC one, says that this directive is about resuscitation);
# the value is the SNOMED CT finding.  The words shown are an EHR's usual ones.
CODE_STATUS_TYPE: Code = ("304251008", "Resuscitation")
ADVANCE_DIRECTIVE_LOINC: Code = ("75320-2", "Advance directive")
CODE_STATUS_VALUES: dict[str, tuple[str, str, str]] = {  # key: (SNOMED CT code, display, words shown)
    "full": ("304252001", "For resuscitation", "Full code"),
    "dnr": ("304253006", "Not for resuscitation", "DNR (do not resuscitate)"),
}


def code_status_code() -> dict[str, object]:
    """``Observation.code`` of a code status: the SNOMED CT directive type and its LOINC translation."""
    return {
        "coding": [
            {"system": SNOMED, "code": CODE_STATUS_TYPE[0], "display": CODE_STATUS_TYPE[1]},
            {"system": LOINC, "code": ADVANCE_DIRECTIVE_LOINC[0], "display": ADVANCE_DIRECTIVE_LOINC[1]},
        ],
        "text": "Code status",
    }


def code_status_value(key: str) -> dict[str, object]:
    """``Observation.valueCodeableConcept`` of code status ``key`` (``full`` or ``dnr``)."""
    code, display, words = CODE_STATUS_VALUES[key]
    return {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": words}


ENCOUNTER_TYPES: dict[str, Code] = {
    "wellness": ("185349003", "Encounter for check up (procedure)"),
    "well_child": ("410620009", "Well child visit (procedure)"),
    "follow_up": ("390906007", "Follow-up encounter (procedure)"),
    "symptom": ("185345009", "Encounter for symptom (procedure)"),
    "emergency": ("50849002", "Emergency room admission (procedure)"),
}

SCREENINGS: dict[str, tuple[Code, str | None, int, int, int]] = {
    # key: (procedure code, sex or None, min age, max age, interval years)
    "mammogram": (("71651007", "Mammography (procedure)"), "female", 40, 75, 2),
    "colonoscopy": (("73761001", "Colonoscopy (procedure)"), None, 45, 76, 10),
    "cervical": (("171149006", "Screening for malignant neoplasm of cervix (procedure)"), "female", 21, 66, 3),
}


@dataclass(frozen=True)
class Allergen:
    key: str
    system: str
    code: str
    display: str
    category: str  # food | medication | environment | biologic
    prevalence: float
    reactions: tuple[Code, ...] = field(default=())


REACTIONS: dict[str, Code] = {
    "hives": ("247472004", "Wheal (finding)"),
    "anaphylaxis": ("39579001", "Anaphylaxis (disorder)"),
    "rash": ("271807003", "Eruption of skin (disorder)"),
    "dyspnea": ("267036007", "Dyspnea (finding)"),
    "swelling": ("267038008", "Edema (finding)"),
    "nausea": ("422587007", "Nausea (finding)"),
}

ALLERGENS: tuple[Allergen, ...] = (
    Allergen(
        "penicillin",
        RXNORM,
        "70618",
        "Penicillin",
        "medication",
        0.08,
        (REACTIONS["hives"], REACTIONS["rash"], REACTIONS["anaphylaxis"]),
    ),
    Allergen(
        "sulfonamide",
        RXNORM,
        "10180",
        "Sulfamethoxazole",
        "medication",
        0.03,
        (REACTIONS["rash"], REACTIONS["hives"]),
    ),
    Allergen(
        "peanut",
        SNOMED,
        "762952008",
        "Peanut (substance)",
        "food",
        0.02,
        (REACTIONS["anaphylaxis"], REACTIONS["hives"], REACTIONS["swelling"]),
    ),
    Allergen(
        "shellfish",
        SNOMED,
        "735029006",
        "Shellfish (substance)",
        "food",
        0.02,
        (REACTIONS["hives"], REACTIONS["nausea"], REACTIONS["swelling"]),
    ),
    Allergen("latex", SNOMED, "111088007", "Latex (substance)", "environment", 0.01, (REACTIONS["rash"],)),
    Allergen(
        "bee_venom",
        SNOMED,
        "288328004",
        "Bee venom (substance)",
        "environment",
        0.01,
        (REACTIONS["swelling"], REACTIONS["anaphylaxis"], REACTIONS["dyspnea"]),
    ),
)
ALLERGEN_BY_KEY = {a.key: a for a in ALLERGENS}

# CDC child and adolescent schedule, as (cvx, display, age in months at the dose).
CHILD_SCHEDULE: tuple[tuple[str, str, int], ...] = (
    ("08", "Hep B, adolescent or pediatric", 0),
    ("08", "Hep B, adolescent or pediatric", 2),
    ("119", "rotavirus, monovalent", 2),
    ("20", "DTaP", 2),
    ("49", "Hib (PRP-OMP)", 2),
    ("133", "Pneumococcal conjugate PCV 13", 2),
    ("10", "IPV", 2),
    ("119", "rotavirus, monovalent", 4),
    ("20", "DTaP", 4),
    ("49", "Hib (PRP-OMP)", 4),
    ("133", "Pneumococcal conjugate PCV 13", 4),
    ("10", "IPV", 4),
    ("08", "Hep B, adolescent or pediatric", 6),
    ("20", "DTaP", 6),
    ("133", "Pneumococcal conjugate PCV 13", 6),
    ("10", "IPV", 6),
    ("49", "Hib (PRP-OMP)", 12),
    ("133", "Pneumococcal conjugate PCV 13", 12),
    ("03", "MMR", 12),
    ("21", "varicella", 12),
    ("83", "Hep A, ped/adol, 2 dose", 12),
    ("20", "DTaP", 15),
    ("83", "Hep A, ped/adol, 2 dose", 18),
    ("20", "DTaP", 48),
    ("10", "IPV", 48),
    ("03", "MMR", 48),
    ("21", "varicella", 48),
    ("115", "Tdap", 132),
    ("114", "meningococcal MCV4P", 132),
    ("165", "HPV9", 132),
    ("165", "HPV9", 138),
    ("114", "meningococcal MCV4P", 192),
)
INFLUENZA: Code = ("140", "Influenza, seasonal, injectable, preservative free")
TD_ADULT: Code = ("113", "Td (adult) preservative free")
ZOSTER: Code = ("187", "zoster vaccine recombinant")
PNEUMO_ADULT: Code = ("33", "pneumococcal polysaccharide PPV23")

# Practitioner specialties (NUCC taxonomy for the qualification, SNOMED for PractitionerRole.specialty).
SPECIALTIES: dict[str, tuple[str, str, str, str]] = {
    # key: (nucc code, nucc display, snomed code, snomed display)
    "family_medicine": ("207Q00000X", "Family Medicine", "419772000", "Family practice"),
    "internal_medicine": ("207R00000X", "Internal Medicine", "419192003", "Internal medicine"),
    "pediatrics": ("208000000X", "Pediatrics", "394537008", "Pediatric specialty"),
    "cardiology": ("207RC0000X", "Cardiovascular Disease", "394579002", "Cardiology"),
    "endocrinology": ("207RE0101X", "Endocrinology, Diabetes & Metabolism", "394583002", "Endocrinology"),
    "pulmonology": ("207RP1001X", "Pulmonary Disease", "418112009", "Pulmonary medicine"),
    "nephrology": ("207RN0300X", "Nephrology", "394589003", "Nephrology"),
    "orthopedics": ("207X00000X", "Orthopaedic Surgery", "394801008", "Trauma and orthopedics"),
    "emergency": ("207P00000X", "Emergency Medicine", "773568002", "Emergency medicine"),
}
PRIMARY_CARE = ("family_medicine", "internal_medicine", "pediatrics")
REFERRAL_PROCEDURE: Code = ("3457005", "Patient referral (procedure)")

US_STATES = ("MA", "NY", "PA", "OH", "IL", "MI", "GA", "NC", "TX", "CA", "WA", "AZ", "CO", "FL", "MN", "OR")
