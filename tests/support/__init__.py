"""Helpers the tests share: imported by test modules and conftest, never a test module itself."""
