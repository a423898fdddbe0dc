"""Fitting what is served: the fusion second stage, its request stage, SASRec, and the whole served state.

A layer between the surfaces (``recgen fit``) / the evaluation harness and ``recgen.recommender``: each fitter
returns a frozen result (``FusionFit``, ``SASRecFit``) that serving saves and evaluation scores, so the served
model is not trained by the evaluation package. Nothing here reads a test target, and nothing here imports
``recgen.evaluation`` (an import-linter contract).
"""
