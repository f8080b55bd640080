"""lmforge's tests, one folder per package; shared helpers in tests/helpers/."""
