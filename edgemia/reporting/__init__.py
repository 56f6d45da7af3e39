"""Reporting stage: report.json, report.md and the console summary, all from one report dict."""
