"""The HL7 v2 tests' fixtures (an app listening for MLLP on a real socket), shared with these tests."""

from tests.sandbox.hl7v2.conftest import mllp_app, mllp_port  # noqa: F401
