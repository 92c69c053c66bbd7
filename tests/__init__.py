"""userrep tests (a package so tests can share typed fixtures from conftest)."""
