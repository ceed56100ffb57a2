"""Evidence: tamper-evident audit log, artifact manifest, signing, compliance."""
