"""Policy texts shared by the policy tests (plain strings: each test writes what it needs)."""

from __future__ import annotations

BASE = """\
version: 1
name: base
defaults:
  route: openai
  on_error: onprem
detection:
  threshold: 0.5
routes:
  onprem:
    kind: onprem
    upstream: worker
  openai:
    kind: managed
    upstream: openai
    fallback: onprem
rules:
  - id: secrets-deny
    when:
      entities:
        any: [AWS_ACCESS_KEY, PASSWORD]
    then:
      deny:
        message: no secrets
  - id: billing-ssn-onprem
    when:
      identity: spiffe://corp.test/billing/*
      entities:
        all: [US_SSN]
        min_score: 0.8
    then:
      route: onprem
  - id: ssn-deny
    when:
      entities:
        any: [US_SSN]
    then:
      deny:
        message: SSNs only from billing
  - id: tenant-onprem
    when:
      header:
        X-Tenant: [acme, globex-*]
    then:
      route: onprem
  - id: completions-onprem
    when:
      endpoint: /v1/completions
      model: "llama-**"
    then:
      route: onprem
  - id: names-managed
    when:
      entities:
        any: [PERSON, LOCATION]
    then:
      route: openai
      sanitize:
        PERSON: pseudonymize
        LOCATION: redact
  - id: email-managed-default
    when:
      entities:
        any: [EMAIL_ADDRESS]
    then:
      route: openai
      sanitize:
        default: hash
"""
