"""The policy chain: small pure rules over a read-only context (no SMTP, no SQL)."""
