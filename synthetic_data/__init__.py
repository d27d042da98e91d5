"""Synthetic patients: a deterministic population model, clinical modules, writers, and loading.

``generate_population(patients=N, seed=S)`` yields FHIR R4 transaction bundles:
the shared directory first, then one bundle per patient.
"""

from synthetic_data.generator import DEFAULT_TODAY, Generator, GeneratorOptions, generate_population

__all__ = ["DEFAULT_TODAY", "Generator", "GeneratorOptions", "generate_population"]
