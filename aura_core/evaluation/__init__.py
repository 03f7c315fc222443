"""Measuring the effect: generation, scoring, the evaluation protocol, reports and plots."""
