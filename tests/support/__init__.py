"""Test helpers shared by the suites: real git servers, fixtures, builders."""
